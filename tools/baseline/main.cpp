// rp-baseline: the baseline page-fault handler (see baseline/server.hpp).
#include <signal.h>

#include <cstdio>

#include <CLI/CLI.hpp>

#include "baseline/server.hpp"

int main(int argc, char** argv) {
    ringpager::baseline::Options options;
    CLI::App app{"rp-baseline: a simple one-thread-per-VM userfaultfd handler (benchmark baseline)"};
    app.add_option("--socket", options.socket_path, "Unix socket to listen on")->required();
    app.add_option("--mem-file", options.mem_file_path, "Firecracker memory file to serve")->required();
    app.add_flag("--copy-all-on-first-fault", options.copy_all_on_first_fault,
                 "On a VM's first fault, copy all of its memory (eager baseline)");
    app.add_flag("--ignore-remove", options.ignore_remove,
                 "Tests only: read REMOVE events but ignore them, serving snapshot bytes again for pages the VM "
                 "gave back (a known-wrong handler)");
    int timeout_s = 30;
    app.add_option("--handshake-timeout", timeout_s, "Seconds to wait for a handshake (default 30)")
        ->check(CLI::Range(1, 3600));
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return app.exit(e) == 0 ? 0 : 2;
    }
    options.handshake_timeout_ms = timeout_s * 1000;

    // Block the shutdown signals before any thread starts, so they are only
    // ever taken by sigwait below.
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGINT);
    sigaddset(&signals, SIGTERM);
    if (int err = pthread_sigmask(SIG_BLOCK, &signals, nullptr); err != 0) {
        std::fprintf(stderr, "rp-baseline: pthread_sigmask: %s\n", std::strerror(err));
        return 1;
    }
    auto server = ringpager::baseline::Server::create(options);
    if (!server) {
        std::fprintf(stderr, "rp-baseline: %s (socket %s, memory file %s)\n", server.error().message().c_str(),
                     options.socket_path.c_str(), options.mem_file_path.c_str());
        return 1;
    }
    (*server)->start();
    // One line on stdout once the socket accepts connections: scripts and
    // tests wait for it instead of polling for the socket file.
    std::printf("rp-baseline: listening on %s\n", options.socket_path.c_str());
    std::fflush(stdout);
    int signal_number = 0;
    while (sigwait(&signals, &signal_number) != 0) {
    }
    (*server)->stop();
    const auto stats = (*server)->stats();
    std::fprintf(stderr,
                 "rp-baseline: stopped on signal %d: %llu connections, %llu faults, %llu pages copied, %llu zeroed, "
                 "%llu REMOVE events%s\n",
                 signal_number, static_cast<unsigned long long>(stats.connections_accepted),
                 static_cast<unsigned long long>(stats.faults), static_cast<unsigned long long>(stats.pages_copied),
                 static_cast<unsigned long long>(stats.pages_zeroed),
                 static_cast<unsigned long long>(stats.remove_events), options.ignore_remove ? " (ignored)" : "");
    return 0;
}
