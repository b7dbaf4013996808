// The guest's kernel and initramfs, all from Debian packages, prepared once into a cache.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace ringpager::realguest {

struct GuestImage {
    std::string kernel_path;     // vmlinuz from linux-image-*-cloud-amd64
    std::string initrd_path;     // our initramfs (newc cpio, uncompressed)
    std::string kernel_package;  // the .deb the kernel came from
    std::string identity;        // changes whenever the kernel, busybox, modules or guest program change
};

// Makes sure `cache_dir` holds the kernel and busybox packages (`apt-get download`, after
// one `apt-get update` if the first try fails), unpacked, and builds the initramfs:
// busybox-static, the virtio_balloon module with its dependencies (virtio_pci too: the
// cloud kernel builds both as modules), `guest_program` as /bin/rg-guest and an /init that
// loads the modules, mounts a tmpfs on /data and execs rg-guest on the console.
// Throws Failure naming the command that failed and its output.
GuestImage prepare_guest_image(const std::string& cache_dir, const std::string& guest_program);

// One newc cpio archive in memory (what the kernel unpacks as an initramfs).
class CpioWriter {
public:
    void add_dir(const std::string& path);
    void add_file(const std::string& path, const std::string& bytes, uint32_t mode);
    void add_char_device(const std::string& path, uint32_t major, uint32_t minor, uint32_t mode);
    // Appends the trailer and returns the archive.
    std::string finish();

private:
    void add(const std::string& path, uint32_t mode, const std::string& bytes, uint32_t rdev_major,
             uint32_t rdev_minor);
    std::string out_;
    uint32_t next_ino_ = 1;
};

// A kernel module's dependencies as its .modinfo section names them ("depends=a,b").
std::vector<std::string> module_depends(const std::string& ko_bytes);

}  // namespace ringpager::realguest
