"""Frontend: PyTorch model -> torch.fx (shift layers as leaves) -> Relax IRModule.

Shift layers arrive as calls to private "composite" Relax functions (``{"Composite":
"shiftcomp.shift_dense" | "shiftcomp.shift_conv2d", ...}``) with the layer's integer weights as constant
arguments, preceded by the activation quantisation prologue in plain Relax ops (composite.py,
quantize.py). Everything else goes through TVM's fx importer (with shiftcomp's fixes, importer.py).

    from shiftcomp.frontend import import_model
    imported = import_model(model.eval(), example_inputs)   # -> ImportedModel(mod, layers, ...)
"""
from .composite import (COMPOSITE_CONV2D, COMPOSITE_DENSE, COMPOSITES, ShiftLayerInfo, composite_info,
                        make_composite_function)
from .importer import (ImportedModel, ShiftFXImporter, add_probes, check_supported, import_graph, import_model,
                       node_location, supported_ops)
from .quantize import act_range, emit_quantize
from .shift_layers import ShiftLayerData, read_shift_layer
from .tracer import ShiftTracer, is_shift_layer, trace

__all__ = ["COMPOSITE_CONV2D", "COMPOSITE_DENSE", "COMPOSITES", "ShiftLayerInfo", "composite_info",
           "make_composite_function", "add_probes", "ImportedModel", "ShiftFXImporter", "check_supported",
           "import_graph", "import_model", "node_location", "supported_ops", "act_range", "emit_quantize",
           "ShiftLayerData", "read_shift_layer", "ShiftTracer", "is_shift_layer", "trace"]
