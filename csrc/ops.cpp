// The hrnet_fast operator library: the schemas (schemas.h); kernels are registered per dispatch key in
// cpu/ and cuda/, fake (meta) implementations and autograd in Python (hrnet_fast/_ext.py).
#include <torch/library.h>

#include "schemas.h"

TORCH_LIBRARY(hrnet_fast, m) { hrnet_fast::define_ops(m); }
