// rp-guestsim subcommands. Each add_* registers one subcommand on `app` and
// points `action` at the code that runs it once parsing succeeded.
#pragma once

#include <functional>

#include <CLI/CLI.hpp>

namespace ringpager::sim::cli {

// Exit codes (SPEC §4): 0 success, 1 runtime failure (or a verification mismatch), 2 usage error.
inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;
inline constexpr int kExitUsage = 2;

using Action = std::function<int()>;

void add_generate_command(CLI::App& app, Action& action);
void add_diff_command(CLI::App& app, Action& action);
void add_flatten_command(CLI::App& app, Action& action);
void add_run_command(CLI::App& app, Action& action);

}  // namespace ringpager::sim::cli
