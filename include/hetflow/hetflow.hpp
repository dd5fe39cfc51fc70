#pragma once
// hetflow: a task-based runtime for heterogeneous machines.
#include "hetflow/access.hpp"
#include "hetflow/arch.hpp"
#include "hetflow/codelet.hpp"
#include "hetflow/config.hpp"
#include "hetflow/data.hpp"
#include "hetflow/error.hpp"
#include "hetflow/future.hpp"
#include "hetflow/perfmodel.hpp"
#include "hetflow/process.hpp"
#include "hetflow/runtime.hpp"
#include "hetflow/version.hpp"
