// rg-guest: the workload inside the real-guest VM (docs/realguest.md). /init execs it as PID 1.
//
// It writes known data, a file in tmpfs (page cache) and an anonymous heap, prints their
// checksums ("rg: ready ..."), then prints a heartbeat with freshly computed checksums every
// rg.hb_ms (200) milliseconds. The host drives it with one-line commands on the console:
//   free        unlink the file and unmap the heap (the guest gets the pages back)
//   write G     write generation G of the data (same sizes) and verify every page of it
//   scan        take most free memory as fresh anonymous pages and check each reads zero;
//               count the pages that still hold generation-0 data (stale snapshot bytes)
//   echo TEXT   answer "rg: echo TEXT" (a marker for the host)
// Every data page starts with the bytes "RGSNAP", a kind ('F' file, 'H' heap) and its
// generation, so a page the host served from the snapshot where the guest expects zeros is
// recognisable wherever it turns up.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#define PAGE_BYTES 4096u
#define WORDS_PER_PAGE (PAGE_BYTES / 8u)
#define IO_CHUNK_BYTES (64u * 1024u)
#define DATA_FILE "/data/rg-file"

struct config {
    unsigned file_mib;
    unsigned heap_mib;
    unsigned hb_ms;
    unsigned scan_reserve_mib;
    uint64_t seed;
};

struct data {
    int present;
    unsigned gen;
    uint64_t file_pages;
    uint64_t heap_pages;
    uint8_t* heap;
};

static struct config cfg = {16, 16, 200, 24, 1};
static struct data data;
static uint8_t io_buffer[IO_CHUNK_BYTES];

// One line to the console. The host matches whole lines, so a line is written with one write().
static void say(const char* fmt, ...) {
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line - 1, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n > sizeof line - 2) n = (int)sizeof line - 2;
    line[n++] = '\n';
    for (int done = 0; done < n;) {
        ssize_t w = write(1, line + done, (size_t)(n - done));
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return;  // the console is gone; nothing else can report it
        done += (int)w;
    }
}

static void die(const char* what) {
    say("rg: FATAL %s: %s", what, strerror(errno));
    // As PID 1, exiting panics the kernel, which the host sees on the console.
    exit(1);
}

static uint64_t now_ms(void) {
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0) die("clock_gettime");
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static unsigned cmdline_uint(const char* cmdline, const char* key, unsigned fallback) {
    const char* p = strstr(cmdline, key);
    if (p == NULL) return fallback;
    return (unsigned)strtoul(p + strlen(key), NULL, 10);
}

static void read_config(void) {
    char cmdline[4096] = {0};
    int fd = open("/proc/cmdline", O_RDONLY | O_CLOEXEC);
    if (fd < 0) die("open(/proc/cmdline)");
    ssize_t n = read(fd, cmdline, sizeof cmdline - 1);
    if (n < 0) die("read(/proc/cmdline)");
    if (close(fd) != 0) die("close(/proc/cmdline)");
    cfg.file_mib = cmdline_uint(cmdline, "rg.file_mib=", cfg.file_mib);
    cfg.heap_mib = cmdline_uint(cmdline, "rg.heap_mib=", cfg.heap_mib);
    cfg.hb_ms = cmdline_uint(cmdline, "rg.hb_ms=", cfg.hb_ms);
    cfg.scan_reserve_mib = cmdline_uint(cmdline, "rg.scan_reserve_mib=", cfg.scan_reserve_mib);
    cfg.seed = cmdline_uint(cmdline, "rg.seed=", (unsigned)cfg.seed);
}

// The content of one data page: a header, then xorshift64* words from a per-page seed.
static void fill_page(uint8_t* page, char kind, unsigned gen, uint64_t index) {
    uint64_t* w = (uint64_t*)page;
    memcpy(page, "RGSNAP", 6);
    page[6] = (uint8_t)kind;
    page[7] = (uint8_t)gen;
    w[1] = index;
    w[2] = cfg.seed;
    uint64_t x = (cfg.seed * 0x9E3779B97F4A7C15ull) ^ ((uint64_t)(uint8_t)kind << 56) ^ ((uint64_t)gen << 48) ^
                 (index + 1);
    for (unsigned i = 3; i < WORDS_PER_PAGE; i++) {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        w[i] = x * 0x2545F4914F6CDD1Dull;
    }
}

static uint64_t checksum_update(uint64_t h, const uint8_t* bytes, size_t len) {
    const uint64_t* w = (const uint64_t*)bytes;
    for (size_t i = 0; i < len / 8; i++) {
        h ^= w[i];
        h *= 0x100000001B3ull;
        h ^= h >> 29;
    }
    return h;
}

static const uint64_t kChecksumStart = 0xCBF29CE484222325ull;

static uint64_t checksum_file(void) {
    int fd = open(DATA_FILE, O_RDONLY | O_CLOEXEC);
    if (fd < 0) die("open(" DATA_FILE ")");
    uint64_t h = kChecksumStart;
    for (;;) {
        ssize_t n = read(fd, io_buffer, sizeof io_buffer);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) die("read(" DATA_FILE ")");
        if (n == 0) break;
        h = checksum_update(h, io_buffer, (size_t)n);
    }
    if (close(fd) != 0) die("close(" DATA_FILE ")");
    return h;
}

static uint64_t checksum_heap(void) {
    return checksum_update(kChecksumStart, data.heap, data.heap_pages * PAGE_BYTES);
}

static void write_all(int fd, const uint8_t* bytes, size_t len) {
    for (size_t done = 0; done < len;) {
        ssize_t n = write(fd, bytes + done, len - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) die("write(" DATA_FILE ")");
        done += (size_t)n;
    }
}

// Writes generation `gen` of the file and the heap; returns their checksums as written.
static void write_data(unsigned gen, uint64_t* file_sum, uint64_t* heap_sum) {
    data.file_pages = (uint64_t)cfg.file_mib * 256u;
    data.heap_pages = (uint64_t)cfg.heap_mib * 256u;
    data.gen = gen;
    int fd = open(DATA_FILE, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) die("open(" DATA_FILE ")");
    uint64_t h = kChecksumStart;
    const uint64_t pages_per_chunk = IO_CHUNK_BYTES / PAGE_BYTES;
    for (uint64_t p = 0; p < data.file_pages; p += pages_per_chunk) {
        uint64_t n = data.file_pages - p < pages_per_chunk ? data.file_pages - p : pages_per_chunk;
        for (uint64_t i = 0; i < n; i++) fill_page(io_buffer + i * PAGE_BYTES, 'F', gen, p + i);
        h = checksum_update(h, io_buffer, n * PAGE_BYTES);
        write_all(fd, io_buffer, n * PAGE_BYTES);
    }
    if (close(fd) != 0) die("close(" DATA_FILE ")");
    *file_sum = h;
    size_t heap_bytes = data.heap_pages * PAGE_BYTES;
    data.heap = heap_bytes == 0 ? NULL : mmap(NULL, heap_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (data.heap == MAP_FAILED) die("mmap(heap)");
    for (uint64_t p = 0; p < data.heap_pages; p++) fill_page(data.heap + p * PAGE_BYTES, 'H', gen, p);
    *heap_sum = checksum_heap();
    data.present = 1;
}

static void free_data(void) {
    if (!data.present) return;
    if (unlink(DATA_FILE) != 0) die("unlink(" DATA_FILE ")");
    if (data.heap != NULL && munmap(data.heap, data.heap_pages * PAGE_BYTES) != 0) die("munmap(heap)");
    say("rg: freed file_pages=%llu heap_pages=%llu", (unsigned long long)data.file_pages,
        (unsigned long long)data.heap_pages);
    data.present = 0;
    data.heap = NULL;
}

// Every page of the data compared with a freshly generated copy (stronger than a checksum).
static uint64_t verify_data(void) {
    static uint8_t expected[PAGE_BYTES];
    uint64_t bad = 0;
    int fd = open(DATA_FILE, O_RDONLY | O_CLOEXEC);
    if (fd < 0) die("open(" DATA_FILE ")");
    for (uint64_t p = 0; p < data.file_pages; p++) {
        ssize_t n = pread(fd, io_buffer, PAGE_BYTES, (off_t)(p * PAGE_BYTES));
        if (n != (ssize_t)PAGE_BYTES) die("pread(" DATA_FILE ")");
        fill_page(expected, 'F', data.gen, p);
        bad += memcmp(expected, io_buffer, PAGE_BYTES) != 0;
    }
    if (close(fd) != 0) die("close(" DATA_FILE ")");
    for (uint64_t p = 0; p < data.heap_pages; p++) {
        fill_page(expected, 'H', data.gen, p);
        bad += memcmp(expected, data.heap + p * PAGE_BYTES, PAGE_BYTES) != 0;
    }
    return bad;
}

static uint64_t meminfo_kib(const char* key) {
    char text[4096] = {0};
    int fd = open("/proc/meminfo", O_RDONLY | O_CLOEXEC);
    if (fd < 0) die("open(/proc/meminfo)");
    ssize_t n = read(fd, text, sizeof text - 1);
    if (n < 0) die("read(/proc/meminfo)");
    if (close(fd) != 0) die("close(/proc/meminfo)");
    const char* p = strstr(text, key);
    return p == NULL ? 0 : strtoull(p + strlen(key), NULL, 10);
}

// Fresh anonymous memory must read zero. With init_on_free=1 the kernel does not zero pages
// it allocates (it zeroed them when they were freed), so a page the host discarded (balloon,
// free page reporting) and then served with old snapshot bytes shows up here as non-zero.
static void scan_fresh_memory(void) {
    const uint64_t free_kib = meminfo_kib("MemFree:");
    const uint64_t reserve_kib = (uint64_t)cfg.scan_reserve_mib * 1024u;
    const uint64_t chunk_bytes = 1u << 20;
    const uint64_t chunks = free_kib > reserve_kib ? (free_kib - reserve_kib) * 1024u / chunk_bytes : 0;
    uint8_t** maps = calloc(chunks + 1, sizeof *maps);
    if (maps == NULL) die("calloc(scan)");
    uint64_t pages = 0, nonzero = 0, stale = 0, mapped = 0;
    char first_bad[64] = "none";
    for (; mapped < chunks; mapped++) {
        // MAP_POPULATE write-faults every page of a private writable mapping: real pages from
        // the free lists, which is where the discarded ones wait.
        maps[mapped] = mmap(NULL, chunk_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
        if (maps[mapped] == MAP_FAILED) break;
        for (uint64_t off = 0; off < chunk_bytes; off += PAGE_BYTES) {
            const uint8_t* page = maps[mapped] + off;
            const uint64_t* w = (const uint64_t*)page;
            int zero = 1;
            for (unsigned i = 0; i < WORDS_PER_PAGE && zero; i++) zero = w[i] == 0;
            pages++;
            if (zero) continue;
            if (nonzero == 0) {
                snprintf(first_bad, sizeof first_bad, "%02x%02x%02x%02x%02x%02x%02x%02x", page[0], page[1], page[2],
                         page[3], page[4], page[5], page[6], page[7]);
            }
            nonzero++;
            stale += memcmp(page, "RGSNAP", 6) == 0 && page[7] == 0;
        }
    }
    for (uint64_t i = 0; i < mapped; i++) {
        if (munmap(maps[i], chunk_bytes) != 0) die("munmap(scan)");
    }
    free(maps);
    say("rg: scan pages=%llu nonzero=%llu stale=%llu first=%s", (unsigned long long)pages,
        (unsigned long long)nonzero, (unsigned long long)stale, first_bad);
}

static void heartbeat(unsigned count) {
    if (!data.present) {
        say("rg: hb %u gen=none file=none heap=none", count);
        return;
    }
    say("rg: hb %u gen=%u file=%016llx heap=%016llx", count, data.gen, (unsigned long long)checksum_file(),
        (unsigned long long)checksum_heap());
}

static void command(char* line) {
    if (strcmp(line, "free") == 0) {
        free_data();
    } else if (strncmp(line, "write ", 6) == 0) {
        free_data();
        uint64_t file_sum = 0, heap_sum = 0;
        write_data((unsigned)strtoul(line + 6, NULL, 10), &file_sum, &heap_sum);
        const uint64_t bad = verify_data();
        say("rg: wrote gen=%u file=%016llx heap=%016llx bad_pages=%llu", data.gen, (unsigned long long)file_sum,
            (unsigned long long)heap_sum, (unsigned long long)bad);
    } else if (strcmp(line, "scan") == 0) {
        scan_fresh_memory();
    } else if (strncmp(line, "echo ", 5) == 0) {
        say("rg: echo %s", line + 5);
    } else if (line[0] != '\0') {
        say("rg: unknown command '%s'", line);
    }
}

static int balloon_bound(void) {
    return access("/sys/bus/virtio/drivers/virtio_balloon", F_OK) == 0;
}

int main(void) {
    struct termios tio;
    // The host types commands; no echo, so the console carries only our lines.
    if (tcgetattr(0, &tio) == 0) {
        tio.c_lflag &= ~(tcflag_t)(ECHO | ECHONL);
        if (tcsetattr(0, TCSANOW, &tio) != 0) die("tcsetattr");
    }
    read_config();
    uint64_t file_sum = 0, heap_sum = 0;
    write_data(0, &file_sum, &heap_sum);
    say("rg: ready gen=0 file=%016llx heap=%016llx file_pages=%llu heap_pages=%llu balloon=%s",
        (unsigned long long)file_sum, (unsigned long long)heap_sum, (unsigned long long)data.file_pages,
        (unsigned long long)data.heap_pages, balloon_bound() ? "bound" : "missing");
    char line[256];
    size_t used = 0;
    unsigned beats = 0;
    uint64_t next_beat_ms = now_ms() + cfg.hb_ms;
    for (;;) {
        const uint64_t now = now_ms();
        if (now >= next_beat_ms) {
            heartbeat(++beats);
            next_beat_ms = now_ms() + cfg.hb_ms;
            continue;
        }
        struct pollfd pfd = {0, POLLIN, 0};
        int ready = poll(&pfd, 1, (int)(next_beat_ms - now));
        if (ready < 0 && errno == EINTR) continue;
        if (ready < 0) die("poll(console)");
        if (ready == 0) continue;
        ssize_t n = read(0, line + used, sizeof line - 1 - used);
        if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
        if (n <= 0) die("read(console)");
        used += (size_t)n;
        line[used] = '\0';
        char* nl;
        while ((nl = strpbrk(line, "\r\n")) != NULL) {
            *nl = '\0';
            command(line);
            used -= (size_t)(nl + 1 - line);
            memmove(line, nl + 1, used + 1);
        }
        if (used == sizeof line - 1) used = 0;  // an over-long line is dropped
    }
}
