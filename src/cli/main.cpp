// ringpager: the engine process and its tools, one binary with subcommands.
#include <cstdio>
#include <cstring>
#include <string>

int serve_main(int argc, char** argv);
int snapshot_main(int argc, char** argv);
int ctl_main(int argc, char** argv);
int ws_main(int argc, char** argv);

namespace {
void usage(FILE* out) {
    fprintf(out,
            "ringpager: a userfaultfd pager for Firecracker snapshot restores\n"
            "\n"
            "usage: ringpager <command> [options]\n"
            "\n"
            "commands:\n"
            "  serve      serve memory snapshots to VMs that connect to a Unix socket\n"
            "  snapshot   build, inspect, verify, push and list layered snapshots (local or s3://)\n"
            "  ws         working-set files: ws merge A B C --out F [--min-count K]\n"
            "  ctl        ask a running engine (serve --control PATH): list, stats, vm, release, prefetch, drain\n"
            "\n"
            "Run 'ringpager <command> --help' for a command's options.\n"
            "Related tools: rp-guestsim (guest simulator), rp-bench (restore benchmark), rp-baseline.\n");
}
}  // namespace

int main(int argc, char** argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const std::string command = argv[1];
    if (command == "serve") return serve_main(argc - 1, argv + 1);
    if (command == "snapshot") return snapshot_main(argc - 1, argv + 1);
    if (command == "ctl") return ctl_main(argc - 1, argv + 1);
    if (command == "ws") return ws_main(argc - 1, argv + 1);
    if (command == "--help" || command == "-h" || command == "help") {
        usage(stdout);
        return 0;
    }
    if (command == "--version") {
        printf("ringpager 0.1.0\n");
        return 0;
    }
    fprintf(stderr, "ringpager: unknown command '%s'\n", command.c_str());
    usage(stderr);
    return 2;
}
