// One handler process and the real guests restored through it at the same time.
#pragma once

#include <string>
#include <vector>

#include "realguest/handlers.hpp"
#include "realguest/restore.hpp"

namespace ringpager::realguest {

struct SessionResult {
    std::vector<RestoreReport> vms;
    std::string handler_exit;  // "exit 0", or how it ended
    bool handler_clean = false;
    std::string handler_log;   // its whole log
    std::string failure;       // the handler could not be started or did not stop cleanly
    bool passed() const;       // every VM passed and the handler exited 0
};

// Starts one handler process with one socket per entry of `kinds` (one VM each; ringpager
// kinds may be mixed in one engine), restores one VM per socket at once (a thread each),
// and stops the handler with SIGTERM once every VM has quit.
SessionResult run_session(const Snapshot& snapshot, const Binaries& bin, const std::vector<std::string>& kinds,
                          const std::string& work_dir, bool full_checks);

}  // namespace ringpager::realguest
