#pragma once
// The MPI layer's boolean environment variables (HETFLOW_MPI_CHECK, HETFLOW_MPI_STATS), read as
// the engine reads HETFLOW_STATS (whose parser the library's hidden symbols keep to itself).

namespace hetflow::mpi {

/// False when unset or empty; 1, true, yes, on or 0, false, no, off; anything else throws
/// InvalidArgument naming the variable.
bool env_flag(const char* variable);

}  // namespace hetflow::mpi
