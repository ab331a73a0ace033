// Helpers for the libFuzzer harnesses: a scratch file for readers that take a
// path, and a torch.save-style zip built around raw pickle bytes (so that the
// fuzzer reaches the unpickler without having to forge zip CRCs).
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace vitkit::fuzz {

// Writes data to a per-process scratch file (name + pid) and returns its path.
std::string scratch_file(const std::string& name, const uint8_t* data, size_t size);

// A zip of stored entries (name, bytes), as torch.save lays them out.
std::vector<uint8_t> make_zip(const std::vector<std::pair<std::string, std::vector<uint8_t>>>& entries);

}  // namespace vitkit::fuzz
