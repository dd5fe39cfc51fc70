#pragma once
// The MPI layer's environment variables (HETFLOW_MPI_CHECK, HETFLOW_MPI_STATS,
// HETFLOW_MPI_WATCHDOG), read as the engine reads its own (whose parsers the library's hidden
// symbols keep to itself): unset or empty is the default, and the value is taken as written, with
// no surrounding spaces.
#include <optional>
#include <string>

namespace hetflow::mpi {

/// False when unset or empty; 1, true, yes, on or 0, false, no, off; anything else throws
/// InvalidArgument naming the variable.
bool env_flag(const char* variable);

/// Seconds: nullopt when unset or empty; a decimal number from 0 to `most` (no sign, no spaces,
/// not inf or nan); anything else throws InvalidArgument with "<variable>='<value>': " and
/// `expected`.
std::optional<double> env_seconds(const char* variable, double most, const std::string& expected);

}  // namespace hetflow::mpi
