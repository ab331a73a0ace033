// NumPy .npy files (numpy/lib/format.py): the magic "\x93NUMPY", a version
// byte pair, a little-endian header length (2 bytes in 1.0, 4 in 2.0/3.0), a
// Python dict literal {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
// padded with spaces and a newline, then the raw C-order array bytes.
#pragma once
#include <string>

#include "vitkit/core/tensor.h"

namespace vitkit {

// Reads '<f4' '<f8' '<f2' '|u1' '|i1' '<i2' '<i4' '<i8' '|b1' arrays in C order,
// versions 1.0, 2.0 and 3.0. Every header field and the data size are checked
// against the file; errors name the file and the problem.
Tensor read_npy(const std::string& path);

// Writes t as a version 1.0 file, atomically. BF16 has no NumPy dtype and is
// rejected (convert it to F32 first).
void write_npy(const std::string& path, const Tensor& t);

// The NumPy descr of a dtype ("<f4", "|u1", ...); throws for BF16.
std::string npy_descr(DType t);

}  // namespace vitkit
