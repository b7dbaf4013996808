// Parsing and reading of the `ringpager serve --config` file. Every value in
// it is checked before use: a mistyped field is a one-line refusal, never an
// exception.
#include "cli/serve_config.hpp"

#include <sys/stat.h>

#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <map>

#include "common/log.hpp"
#include "common/strict_json.hpp"
#include "ringpager/file_desc.hpp"

namespace ringpager {
namespace {

using json = nlohmann::json;

std::string too_large(uint64_t size_bytes) {
    return "is " + std::to_string(size_bytes) + " bytes (at most " + std::to_string(kMaxConfigBytes) + ")";
}

std::string quote_value(std::string_view value) { return "\"" + escape_for_log(value) + "\""; }

// Reads the string field `key` of `listener` if present; refuses a value that
// is not a string, is empty, or holds a NUL byte (it would cut the path short).
bool string_field(const json& listener, const char* key, std::string& out, bool& present, std::string& error) {
    const auto it = listener.find(key);
    present = it != listener.end();
    if (!present) return true;
    if (!it->is_string()) {
        error = std::string("\"") + key + "\" is not a string";
        return false;
    }
    out = it->get<std::string>();
    if (out.empty()) {
        error = std::string("\"") + key + "\" is empty";
        return false;
    }
    if (out.find('\0') != std::string::npos) {
        error = std::string("\"") + key + "\" contains a NUL byte";
        return false;
    }
    return true;
}

bool parse_listener(const json& listener, ListenerSpec& spec, std::string& error) {
    if (!listener.is_object()) {
        error = "not a JSON object";
        return false;
    }
    for (const auto& [key, value] : listener.items()) {
        if (key != "socket" && key != "mem_file" && key != "snapshot" && key != "mode" && key != "record_ws" &&
            key != "working_set") {
            error = "unknown key " + quote_value(key) +
                    " (expected socket, mem_file, snapshot, mode, record_ws, working_set)";
            return false;
        }
    }
    bool has_socket = false, has_mem_file = false, has_snapshot = false, has_mode = false, has_ws = false;
    std::string mem_file, snapshot, mode;
    if (!string_field(listener, "socket", spec.socket, has_socket, error) ||
        !string_field(listener, "mem_file", mem_file, has_mem_file, error) ||
        !string_field(listener, "snapshot", snapshot, has_snapshot, error) ||
        !string_field(listener, "mode", mode, has_mode, error) ||
        !string_field(listener, "record_ws", spec.record_ws, has_ws, error) ||
        !string_field(listener, "working_set", spec.working_set, has_ws, error))
        return false;
    if (!has_socket) {
        error = "missing \"socket\"";
        return false;
    }
    if (has_mem_file == has_snapshot) {
        error = "give exactly one of \"mem_file\" and \"snapshot\"";
        return false;
    }
    spec.layered = has_snapshot;
    spec.path = has_snapshot ? snapshot : mem_file;
    if (has_mode && mode != "lazy" && mode != "prefetch") {
        error = "\"mode\" must be \"lazy\" or \"prefetch\", not " + quote_value(mode);
        return false;
    }
    spec.mode = mode == "prefetch" ? ServeMode::prefetch : ServeMode::lazy;
    if (!spec.working_set.empty() && spec.mode != ServeMode::prefetch) {
        error = "\"working_set\" needs \"mode\": \"prefetch\" (the prefetcher replays it)";
        return false;
    }
    return true;
}

// The document's shape and every listener; `error` without the file's name.
bool parse_document(std::string_view text, std::vector<ListenerSpec>& specs, std::string& error) {
    if (text.size() > kMaxConfigBytes) {
        error = "text " + too_large(text.size());
        return false;
    }
    json doc;
    if (!parse_strict_json(text, doc, error)) return false;
    if (!doc.is_object()) {
        error = "not a JSON object (expected {\"listeners\": [...]})";
        return false;
    }
    for (const auto& [key, value] : doc.items()) {
        if (key != "listeners") {
            error = "unknown key " + quote_value(key) + " (expected listeners)";
            return false;
        }
    }
    const auto listeners = doc.find("listeners");
    if (listeners == doc.end() || !listeners->is_array()) {
        error = "\"listeners\" is missing or not an array";
        return false;
    }
    if (listeners->empty() || listeners->size() > kMaxConfigListeners) {
        error = std::to_string(listeners->size()) + " listeners (give 1 to " + std::to_string(kMaxConfigListeners) + ")";
        return false;
    }
    std::map<std::string, size_t> socket_owner;
    for (size_t i = 0; i < listeners->size(); i++) {
        ListenerSpec spec;
        if (!parse_listener((*listeners)[i], spec, error)) {
            error = "listener " + std::to_string(i) + ": " + error;
            return false;
        }
        if (const auto [it, fresh] = socket_owner.emplace(spec.socket, i); !fresh) {
            error = "listener " + std::to_string(i) + ": socket " + quote_value(spec.socket) + " is also listener " +
                    std::to_string(it->second) + "'s";
            return false;
        }
        specs.push_back(std::move(spec));
    }
    return true;
}

const char* file_type_name(mode_t mode) {
    if (S_ISDIR(mode)) return "a directory";
    if (S_ISFIFO(mode)) return "a FIFO";
    if (S_ISCHR(mode)) return "a character device";
    if (S_ISBLK(mode)) return "a block device";
    if (S_ISSOCK(mode)) return "a socket";
    return "of an unknown type";
}

}  // namespace

bool parse_serve_config(std::string_view text, const std::string& path, std::vector<ListenerSpec>& out,
                        std::string& error) {
    std::vector<ListenerSpec> specs;
    if (!parse_document(text, specs, error)) {
        error = "config file " + path + ": " + error;
        return false;
    }
    out.insert(out.end(), std::make_move_iterator(specs.begin()), std::make_move_iterator(specs.end()));
    return true;
}

bool read_config_file(const std::string& path, std::string& text, std::string& error) {
    const std::string name = "config file " + path;
    // O_NONBLOCK: opening a FIFO for reading must not wait for a writer.
    auto file = FileDesc::open(path.c_str(), O_RDONLY | O_NONBLOCK);
    if (!file) {
        error = name + ": " + file.error().message();
        return false;
    }
    struct stat st {};
    if (::fstat(file->get(), &st) != 0) {
        error = name + ": fstat: " + std::strerror(errno);
        return false;
    }
    if (!S_ISREG(st.st_mode)) {
        error = name + " is " + file_type_name(st.st_mode) + ", not a regular file";
        return false;
    }
    if (static_cast<uint64_t>(st.st_size) > kMaxConfigBytes) {
        error = name + " " + too_large(static_cast<uint64_t>(st.st_size));
        return false;
    }
    // The bound holds while reading too: the file may have grown since fstat.
    text.clear();
    char chunk[64 * 1024];
    for (;;) {
        const ssize_t n = ::read(file->get(), chunk, sizeof chunk);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            error = name + ": read: " + std::strerror(errno);
            return false;
        }
        if (n == 0) return true;
        text.append(chunk, static_cast<size_t>(n));
        if (text.size() > kMaxConfigBytes) {
            error = name + " " + too_large(text.size()) + " and still growing";
            return false;
        }
    }
}

}  // namespace ringpager
