// One registration function per converter family; each lives in converters/<family>.cpp and
// converters/all_converters.cpp calls them all. A new family is one file plus one line here and
// one line there.
#pragma once

namespace kiln {

class ConverterRegistry;

// Called by ConverterRegistry::global(): registers every family below.
void registerAllConverters(ConverterRegistry& registry);

void registerActivationConverters(ConverterRegistry& registry);
void registerElementwiseConverters(ConverterRegistry& registry);
void registerUnaryConverters(ConverterRegistry& registry);
void registerCastConverters(ConverterRegistry& registry);
void registerNoopConverters(ConverterRegistry& registry);
void registerShapeConverters(ConverterRegistry& registry);
void registerIndexingConverters(ConverterRegistry& registry);
void registerConvolutionConverters(ConverterRegistry& registry);
void registerMatmulConverters(ConverterRegistry& registry);
void registerPoolingConverters(ConverterRegistry& registry);
void registerNormalizationConverters(ConverterRegistry& registry);
void registerReduceConverters(ConverterRegistry& registry);
void registerSoftmaxConverters(ConverterRegistry& registry);
void registerAttentionConverters(ConverterRegistry& registry);
void registerFactoryConverters(ConverterRegistry& registry);
void registerSelectionConverters(ConverterRegistry& registry);
void registerPaddingConverters(ConverterRegistry& registry);
void registerSpecialValueConverters(ConverterRegistry& registry);
void registerResizeConverters(ConverterRegistry& registry);
void registerCumulativeConverters(ConverterRegistry& registry);
void registerRemainderConverters(ConverterRegistry& registry);
void registerRearrangeConverters(ConverterRegistry& registry);

}  // namespace kiln
