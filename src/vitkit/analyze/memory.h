// Peak resident memory (RSS) of this process, with a resettable high-water
// mark so that each benchmark row reports its own peak.
#pragma once
#include <cstdint>

namespace vitkit {

// Resets the RSS high-water mark to the current RSS (Linux: writes "5" to
// /proc/self/clear_refs). Returns false when the kernel refuses; the peak is
// then the peak since the process started (see peak_rss_resettable()).
bool reset_peak_rss();
// True when reset_peak_rss() works here (checked once).
bool peak_rss_resettable();
// Peak RSS in bytes since the last reset: VmHWM from /proc/self/status, or
// getrusage's ru_maxrss when /proc is not readable.
int64_t peak_rss_bytes();
// Current RSS in bytes (VmRSS), 0 when unknown.
int64_t current_rss_bytes();
// Returns freed heap memory to the kernel (malloc_trim), so that a reset that
// follows starts from what is live rather than from what malloc kept.
void release_free_memory();

}  // namespace vitkit
