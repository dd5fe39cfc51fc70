#pragma once
// What makes a DataLayout usable: its fields can be set by hand, so registration checks them.
#include <string>

#include "hetflow/data.hpp"

namespace hetflow::detail {

/// Throws InvalidArgument, naming `where`, unless `layout` has 0 (a variable) to kMaxDims
/// dimensions, a contiguous first one, strides that do not overlap, and bytes that size_t counts.
void check_layout(const DataLayout& layout, const std::string& where);

}  // namespace hetflow::detail
