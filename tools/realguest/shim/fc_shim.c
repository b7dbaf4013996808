// librp-fcshim.so: an LD_PRELOAD library that makes a restoring QEMU behave like Firecracker
// towards a userfaultfd page-fault handler (SPEC.md §1; docs/realguest.md).
//
// QEMU maps guest RAM from a memory-backend-file with mmap(MAP_SHARED) of the file named by
// RP_SHIM_RAM_PATH. This library intercepts that one mapping and, before QEMU can touch a
// byte of it, does what Firecracker does on a UFFD restore:
//   - maps the range anonymous and private instead (MAP_FIXED|MAP_PRIVATE|MAP_ANONYMOUS|
//     MAP_NORESERVE, at the address QEMU asked for),
//   - creates a userfaultfd (O_CLOEXEC|O_NONBLOCK, UFFD_FEATURE_EVENT_REMOVE) and registers
//     the range in MISSING mode,
//   - connects once to RP_SHIM_SOCKET and sends the Firecracker 1.12 JSON with the uffd as
//     one SCM_RIGHTS fd in one sendmsg; the connection and the uffd stay open until exit.
// From then on every first touch of guest RAM is served by the handler, and QEMU's balloon
// and free page reporting discards (madvise(MADV_DONTNEED) on this anonymous range) reach it
// as UFFD_EVENT_REMOVEs, one per madvise call.
//
// It reports on stderr, one line each, prefixed "rp-shim: " with CLOCK_MONOTONIC times in ns:
//   handshake t=NS base=0x... size=N         the handshake was sent
//   discard t=NS off=N len=N count=N bytes=N every discard of 64 KiB or more (free page
//                                             reporting), with running totals of all discards
//   resident t=NS pages=N                    every page is resident or discarded since
//   exit discards=N bytes=N resident_pages=N at exit
// Any failure is one line and exit(1): a QEMU that cannot be restored must not run on.
//
// RP_SHIM_OFFSET (default 0) is the region's offset in the memory file. RP_SHIM_STATS, if
// set, names a file the shim creates and keeps its counters in (struct shim_stats below,
// shared with the harness through tools/realguest/realguest/shim_stats.hpp), so the
// harness can read them at any moment without a round trip.
#define _GNU_SOURCE
// Both mmap and mmap64 are defined below; with 64-bit file offsets the headers would
// rename the first into the second. off_t is 64 bits on x86_64 either way.
#undef _FILE_OFFSET_BITS
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define PAGE_BYTES 4096ull
#define LOGGED_DISCARD_BYTES (64ull * 1024ull)
#define SAMPLE_INTERVAL_NS 1000000L

// The counters in RP_SHIM_STATS: little-endian u64s at fixed offsets, stored atomically.
struct shim_stats {
    uint64_t magic;           // "RPSHIM01"
    uint64_t handshake_ns;    // CLOCK_MONOTONIC when the handshake was sent
    uint64_t resident_ns;     // when every page was resident or discarded (0: not yet)
    uint64_t discards;        // madvise discards of guest RAM: one UFFD_EVENT_REMOVE each
    uint64_t discard_bytes;
    uint64_t large_discards;  // of which 64 KiB or more (free page reporting; the balloon discards 4 KiB)
};

static struct shim_stats* stats;  // in the RP_SHIM_STATS file, or a private copy

static void store(uint64_t* field, uint64_t value) { __atomic_store_n(field, value, __ATOMIC_RELEASE); }

static struct {
    pthread_mutex_t mu;          // guards everything below but the constants set at handshake
    int active;                  // the RAM mapping was replaced and handed over
    uint64_t base;
    uint64_t size;
    uint8_t* discarded;          // per page: discarded since the handshake (counts as settled)
    uint64_t discards;
    uint64_t discard_bytes;
    int uffd;
    int conn;
} shim = {PTHREAD_MUTEX_INITIALIZER, 0, 0, 0, NULL, 0, 0, -1, -1};

static void fail(const char* what, int err);

static void map_stats(void) {
    const char* path = getenv("RP_SHIM_STATS");
    if (path == NULL) {
        stats = calloc(1, sizeof *stats);
        if (stats == NULL) fail("calloc(stats)", ENOMEM);
        return;
    }
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) fail("open(RP_SHIM_STATS)", errno);
    if (ftruncate(fd, 4096) != 0) fail("ftruncate(RP_SHIM_STATS)", errno);
    void* p = (void*)syscall(SYS_mmap, NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) fail("mmap(RP_SHIM_STATS)", errno);
    close(fd);
    stats = p;
    memcpy(&stats->magic, "RPSHIM01", 8);
}

static int is_active(void) { return __atomic_load_n(&shim.active, __ATOMIC_ACQUIRE); }

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);  // cannot fail for CLOCK_MONOTONIC with a valid pointer
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void say(const char* fmt, ...) {
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line - 1, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n > sizeof line - 2) n = (int)sizeof line - 2;
    line[n++] = '\n';
    // One write per line so lines from QEMU's threads never interleave; a failed write to
    // stderr has nowhere else to be reported.
    ssize_t ignored = write(2, line, (size_t)n);
    (void)ignored;
}

static void fail(const char* what, int err) {
    say("rp-shim: FATAL %s: %s", what, strerror(err));
    _exit(1);
}

// The real calls, made directly: dlsym(RTLD_NEXT) may allocate, and malloc may mmap.
static void* sys_mmap(void* addr, size_t len, int prot, int flags, int fd, off_t off) {
    return (void*)syscall(SYS_mmap, addr, len, prot, flags, fd, off);
}

static int is_ram_file(int fd) {
    const char* path = getenv("RP_SHIM_RAM_PATH");
    struct stat a, b;
    if (path == NULL || fd < 0) return 0;
    if (fstat(fd, &a) != 0 || stat(path, &b) != 0) return 0;
    return a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

static int open_uffd(void) {
    int uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
    if (uffd < 0 && errno == EPERM) {
        // Unprivileged userfaultfd may be off; /dev/userfaultfd grants it by file mode.
        int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
        if (dev < 0) fail("userfaultfd (and /dev/userfaultfd)", errno);
        uffd = ioctl(dev, USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK);
        int err = errno;
        close(dev);
        if (uffd < 0) fail("ioctl(USERFAULTFD_IOC_NEW)", err);
    }
    if (uffd < 0) fail("userfaultfd", errno);
    struct uffdio_api api = {.api = UFFD_API, .features = UFFD_FEATURE_EVENT_REMOVE};
    if (ioctl(uffd, UFFDIO_API, &api) != 0) fail("ioctl(UFFDIO_API, EVENT_REMOVE)", errno);
    return uffd;
}

static void send_handshake(int uffd, uint64_t base, uint64_t size) {
    const char* path = getenv("RP_SHIM_SOCKET");
    const char* offset_text = getenv("RP_SHIM_OFFSET");
    const unsigned long long offset = offset_text ? strtoull(offset_text, NULL, 0) : 0;
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (path == NULL || strlen(path) >= sizeof addr.sun_path) fail("RP_SHIM_SOCKET unset or too long", EINVAL);
    strcpy(addr.sun_path, path);
    int conn = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (conn < 0) fail("socket", errno);
    // Once, no retry: Firecracker's behaviour, and the handler must already listen.
    if (connect(conn, (struct sockaddr*)&addr, sizeof addr) != 0) fail("connect(RP_SHIM_SOCKET)", errno);
    char json[256];
    int len = snprintf(json, sizeof json,
                       "[{\"base_host_virt_addr\":%llu,\"size\":%llu,\"offset\":%llu,\"page_size\":4096,"
                       "\"page_size_kib\":4096}]",
                       (unsigned long long)base, (unsigned long long)size, offset);
    struct iovec iov = {json, (size_t)len};
    union {
        struct cmsghdr align;
        char bytes[CMSG_SPACE(sizeof(int))];
    } control;
    memset(&control, 0, sizeof control);
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.bytes,
                         .msg_controllen = sizeof control.bytes};
    struct cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(cmsg), &uffd, sizeof uffd);
    ssize_t sent = sendmsg(conn, &msg, MSG_NOSIGNAL);
    if (sent != len) fail("sendmsg(handshake)", sent < 0 ? errno : EMSGSIZE);
    shim.conn = conn;  // kept open: Firecracker >= 1.12 hangs up only when it exits
}

// True when every page is resident (mincore) or was discarded since the handshake.
static int settled_from(uint64_t* cursor, unsigned char* vec, uint64_t chunk_pages) {
    const uint64_t pages = shim.size / PAGE_BYTES;
    while (*cursor < pages) {
        uint64_t n = pages - *cursor < chunk_pages ? pages - *cursor : chunk_pages;
        if (mincore((void*)(shim.base + *cursor * PAGE_BYTES), n * PAGE_BYTES, vec) != 0) fail("mincore", errno);
        pthread_mutex_lock(&shim.mu);
        uint64_t i = 0;
        while (i < n && ((vec[i] & 1) || shim.discarded[*cursor + i])) i++;
        pthread_mutex_unlock(&shim.mu);
        *cursor += i;
        if (i < n) return 0;
    }
    return 1;
}

// Samples residency every millisecond until the whole range has settled. Pages behind the
// cursor are checked again once it reaches the end, so a page discarded after it was passed
// is not missed.
static void* residency_sampler(void* unused) {
    (void)unused;
    const uint64_t chunk_pages = 512;
    unsigned char* vec = malloc(chunk_pages);
    if (vec == NULL) fail("malloc(mincore vector)", ENOMEM);
    uint64_t cursor = 0;
    for (;;) {
        if (settled_from(&cursor, vec, chunk_pages)) {
            uint64_t again = 0;
            if (settled_from(&again, vec, chunk_pages)) break;
            cursor = again;
        }
        struct timespec pause = {0, SAMPLE_INTERVAL_NS};
        nanosleep(&pause, NULL);  // a sampling interval, not a wait for an event
    }
    const uint64_t t = now_ns();
    store(&stats->resident_ns, t);
    say("rp-shim: resident t=%llu pages=%llu", (unsigned long long)t,
        (unsigned long long)(shim.size / PAGE_BYTES));
    free(vec);
    return NULL;
}

static void* take_over(void* addr, size_t len, int prot, int flags) {
    void* got = sys_mmap(addr, len, prot, (flags & MAP_FIXED) | MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (got == MAP_FAILED) return got;
    const uint64_t base = (uint64_t)got;
    if (base % PAGE_BYTES != 0 || len % PAGE_BYTES != 0) fail("RAM mapping not page aligned", EINVAL);
    map_stats();
    shim.discarded = calloc(len / PAGE_BYTES, 1);
    if (shim.discarded == NULL) fail("calloc(discard map)", ENOMEM);
    int uffd = open_uffd();
    struct uffdio_register reg = {.range = {base, len}, .mode = UFFDIO_REGISTER_MODE_MISSING};
    if (ioctl(uffd, UFFDIO_REGISTER, &reg) != 0) fail("ioctl(UFFDIO_REGISTER)", errno);
    send_handshake(uffd, base, len);
    pthread_mutex_lock(&shim.mu);
    shim.uffd = uffd;  // kept open, as Firecracker keeps its own
    shim.base = base;
    shim.size = len;
    // Published last: base and size are read without the lock once this is seen.
    __atomic_store_n(&shim.active, 1, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&shim.mu);
    const uint64_t t = now_ns();
    store(&stats->handshake_ns, t);
    say("rp-shim: handshake t=%llu base=0x%llx size=%llu", (unsigned long long)t, (unsigned long long)base,
        (unsigned long long)len);
    pthread_t sampler;
    int err = pthread_create(&sampler, NULL, residency_sampler, NULL);
    if (err != 0) fail("pthread_create(sampler)", err);
    err = pthread_detach(sampler);
    if (err != 0) fail("pthread_detach(sampler)", err);
    return got;
}

void* mmap(void* addr, size_t len, int prot, int flags, int fd, off_t off) {
    if (fd >= 0 && (flags & MAP_SHARED) && !is_active() && is_ram_file(fd)) return take_over(addr, len, prot, flags);
    return sys_mmap(addr, len, prot, flags, fd, off);
}

void* mmap64(void* addr, size_t len, int prot, int flags, int fd, off64_t off) {
    return mmap(addr, len, prot, flags, fd, off);
}

int madvise(void* addr, size_t len, int advice) {
    const int rc = (int)syscall(SYS_madvise, addr, len, advice);
    const int err = errno;
    if (rc == 0 && (advice == MADV_DONTNEED || advice == MADV_REMOVE) && is_active()) {
        const uint64_t start = (uint64_t)addr, end = start + len;
        const uint64_t lo = start > shim.base ? start : shim.base;
        const uint64_t hi = end < shim.base + shim.size ? end : shim.base + shim.size;
        if (lo < hi) {
            pthread_mutex_lock(&shim.mu);
            memset(shim.discarded + (lo - shim.base) / PAGE_BYTES, 1, (hi - lo + PAGE_BYTES - 1) / PAGE_BYTES);
            const uint64_t count = ++shim.discards;
            const uint64_t bytes = shim.discard_bytes += hi - lo;
            store(&stats->discards, count);
            store(&stats->discard_bytes, bytes);
            if (hi - lo >= LOGGED_DISCARD_BYTES) store(&stats->large_discards, stats->large_discards + 1);
            pthread_mutex_unlock(&shim.mu);
            if (hi - lo >= LOGGED_DISCARD_BYTES) {
                say("rp-shim: discard t=%llu off=%llu len=%llu count=%llu bytes=%llu", (unsigned long long)now_ns(),
                    (unsigned long long)(lo - shim.base), (unsigned long long)(hi - lo), (unsigned long long)count,
                    (unsigned long long)bytes);
            }
        }
    }
    errno = err;
    return rc;
}

__attribute__((destructor)) static void report_at_exit(void) {
    if (!is_active()) return;
    uint64_t resident = 0;
    unsigned char vec[512];
    for (uint64_t off = 0; off < shim.size; off += sizeof vec * PAGE_BYTES) {
        uint64_t n = (shim.size - off) / PAGE_BYTES < sizeof vec ? (shim.size - off) / PAGE_BYTES : sizeof vec;
        if (mincore((void*)(shim.base + off), n * PAGE_BYTES, vec) != 0) break;  // already unmapped: report what we have
        for (uint64_t i = 0; i < n; i++) resident += vec[i] & 1;
    }
    pthread_mutex_lock(&shim.mu);
    say("rp-shim: exit discards=%llu bytes=%llu resident_pages=%llu", (unsigned long long)shim.discards,
        (unsigned long long)shim.discard_bytes, (unsigned long long)resident);
    pthread_mutex_unlock(&shim.mu);
}
