import sys, torch
sys.path.insert(0, "examples")
import kiln
from models import SmallResNet
m = SmallResNet().eval().cuda(); x = torch.randn(4,3,64,64, device="cuda")
print("has_cuda", kiln._C.has_cuda(), flush=True)
with torch.no_grad():
    c = kiln.compile(m, ir=sys.argv[1], inputs=[x], debug=True)
    print("err", (c(x)-m(x)).abs().max().item(), flush=True)
