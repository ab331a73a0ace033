// The quantize pass: linear layers to b-bit integer weights (repr/int.h) with
// scales per output channel (default), per tensor or per group of G inputs,
// symmetric or with zero points, and their inputs quantized dynamically per
// row (token) or statically from a calibration set.
//
//   quantize:bits=8                       every linear layer; inputs int8, dynamic per token
//   quantize:bits=4,granularity=group,group=32
//   quantize:bits=8,act=static,calib=percentile:99.99   with --data D --calib N
//   quantize:bits=8,abits=0,layers=mlp    weight-only, the MLPs only
#pragma once
#include <memory>

#include "vitkit/compress/pass.h"

namespace vitkit {

std::unique_ptr<Pass> make_quantize_pass();

}  // namespace vitkit
