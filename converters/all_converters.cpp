#include "converters/families.h"
#include "converters/registry.h"

namespace kiln {

void registerAllConverters(ConverterRegistry& registry) {
  registerActivationConverters(registry);
  registerElementwiseConverters(registry);
  registerUnaryConverters(registry);
  registerCastConverters(registry);
  registerNoopConverters(registry);
  registerShapeConverters(registry);
  registerIndexingConverters(registry);
  registerConvolutionConverters(registry);
  registerMatmulConverters(registry);
  registerPoolingConverters(registry);
  registerNormalizationConverters(registry);
  registerReduceConverters(registry);
  registerSoftmaxConverters(registry);
  registerAttentionConverters(registry);
  registerFactoryConverters(registry);
  registerSelectionConverters(registry);
  registerPaddingConverters(registry);
  registerSpecialValueConverters(registry);
  registerResizeConverters(registry);
  registerCumulativeConverters(registry);
  registerRemainderConverters(registry);
  registerRearrangeConverters(registry);
}

}  // namespace kiln
