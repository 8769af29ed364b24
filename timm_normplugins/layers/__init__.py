from .error_norm import ERROR_NORM_AREAS, ErrorNorm, error_norm
from .tensor_norm import TN_GRAD_MODES, ReLUTN, TensorNorm, relu_tensor_norm, relu_tn_act_layer, tensor_norm
