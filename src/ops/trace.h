#pragma once
// A named span of one of our ops in a profiler's trace (bench --profile), as
// libtorch's own ops have: "bakallm::NAME", from here to the scope's end.
// With no profiler listening it costs a check of a thread-local flag.
#include <ATen/record_function.h>

#define BAKALLM_TRACE(name) RECORD_USER_SCOPE("bakallm::" name)
