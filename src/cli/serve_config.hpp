// The `ringpager serve --config FILE` file: which sockets to listen on and what
// each serves. A pure parser over the file's text (so it can be unit tested and
// fuzzed) plus a reader that refuses anything but a small regular file.
//
//   {"listeners": [{"socket": "/run/a.sock", "mem_file": "vm.mem", "mode": "lazy", "record_ws": "a.ws"},
//                  {"socket": "/run/b.sock", "snapshot": "vm.rpm", "mode": "prefetch"}]}
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "ringpager/engine.hpp"

namespace ringpager {

// One listener as the operator described it, before its source is opened.
struct ListenerSpec {
    std::string socket;
    std::string path;        // the memory file, or the layered snapshot's manifest
    bool layered = false;    // `path` is a manifest ("snapshot", --snapshot)
    ServeMode mode = ServeMode::lazy;
    std::string record_ws;   // record each VM's working set to this file ("{vm}": its id); "" none
    std::string working_set; // replay this working-set file (prefetch mode only); "" none
};

inline constexpr size_t kMaxConfigBytes = 1024 * 1024;
inline constexpr size_t kMaxConfigListeners = 1024;

// Parses the text of config file `path` (named in errors only). Strict: no
// duplicate keys (at any depth), no unknown keys, every field of its type;
// 1 to kMaxConfigListeners listeners, each with a non-empty "socket", exactly
// one of "mem_file" and "snapshot", an optional "mode" ("lazy", the
// default, or "prefetch"), optional "record_ws" and "working_set" (the latter
// only with "prefetch"); no socket named twice. On success appends the
// listeners to `out`; otherwise leaves `out` alone and sets a one-line `error`
// ("config file PATH: ...") in which every value from the file is escaped.
bool parse_serve_config(std::string_view text, const std::string& path, std::vector<ListenerSpec>& out,
                        std::string& error);

// Reads config file `path` into `text`. Refuses without blocking anything that
// is not a regular file (a FIFO, a device, a directory) and a file larger than
// kMaxConfigBytes, with a one-line `error`.
bool read_config_file(const std::string& path, std::string& text, std::string& error);

}  // namespace ringpager
