#include "rgw_environment.hpp"

#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <sstream>
#include <vector>

#include "common/process.hpp"

namespace rgwtest {
namespace {

Rgw the_rgw;
std::atomic<unsigned> bucket_counter{0};

std::string script_path() {
    const char* path = std::getenv("RINGPAGER_RGW_SCRIPT");
    return path ? path : "";
}

class RgwEnvironment : public ::testing::Environment {
public:
    void SetUp() override {
        std::string script = script_path();
        if (script.empty()) {
            the_rgw.error = "RINGPAGER_RGW_SCRIPT is not set (meson test sets it to tests/remote/rgw.sh)";
            return;
        }
        const char* tmp = std::getenv("TMPDIR");
        std::string pattern = std::string(tmp && *tmp ? tmp : "/tmp") + "/rp-rgw-XXXXXX";
        std::vector<char> buf(pattern.begin(), pattern.end());
        buf.push_back('\0');
        if (!::mkdtemp(buf.data())) {
            the_rgw.error = "mkdtemp " + pattern + ": " + std::strerror(errno);
            return;
        }
        dir_ = buf.data();
        std::string output;
        int status = ringpager::testing::spawn("/bin/bash", {script, "start", dir_}).wait(&output);
        std::istringstream lines(output);
        std::string line, other;
        while (std::getline(lines, line)) {
            if (line.rfind("AWS_ENDPOINT_URL=", 0) == 0) {
                the_rgw.endpoint = line.substr(17);
            } else if (line.rfind("AWS_ACCESS_KEY_ID=", 0) == 0) {
                the_rgw.access_key_id = line.substr(18);
            } else if (line.rfind("AWS_SECRET_ACCESS_KEY=", 0) == 0) {
                the_rgw.secret_access_key = line.substr(22);
            } else if (!line.empty()) {
                other += (other.empty() ? "" : " | ") + line;
            }
        }
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || the_rgw.endpoint.empty()) {
            the_rgw.error = script + " start failed: " + (other.empty() ? "no output" : other);
            return;
        }
        // The CLI under test reads the environment, as an operator's shell would set it.
        ::setenv("AWS_ENDPOINT_URL", the_rgw.endpoint.c_str(), 1);
        ::setenv("AWS_ACCESS_KEY_ID", the_rgw.access_key_id.c_str(), 1);
        ::setenv("AWS_SECRET_ACCESS_KEY", the_rgw.secret_access_key.c_str(), 1);
        ::unsetenv("AWS_REGION");
    }

    void TearDown() override {
        if (dir_.empty()) return;
        std::string output;
        int status = ringpager::testing::spawn("/bin/bash", {script_path(), "stop", dir_}).wait(&output);
        EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "rgw.sh stop: " << output;
        std::error_code ec;
        std::filesystem::remove_all(dir_, ec);
    }

private:
    std::string dir_;
};

}  // namespace

ringpager::remote::S3Config Rgw::config() const {
    ringpager::remote::S3Config c;
    c.endpoint = endpoint;
    c.access_key_id = access_key_id;
    c.secret_access_key = secret_access_key;
    c.retry.first_delay_ms = 5;
    c.retry.max_delay_ms = 40;
    return c;
}

const Rgw& rgw() { return the_rgw; }

void add_rgw_environment() { ::testing::AddGlobalTestEnvironment(new RgwEnvironment); }

std::string unique_bucket(const std::string& tag) {
    std::string name = "t" + std::to_string(::getpid()) + "-" + std::to_string(++bucket_counter) + "-" + tag;
    for (char& c : name) {
        if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-')) c = '-';
    }
    name = name.substr(0, 60);
    while (name.back() == '-') name.pop_back();
    return name;
}

void BucketFixture::SetUp() {
    REQUIRE_RGW();
    auto c = ringpager::remote::S3Client::create(rgw().config());
    ASSERT_TRUE(c) << c.error().message;
    client = std::move(*c);
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    bucket = unique_bucket(info ? info->name() : "test");
    auto made = client->create_bucket(bucket);
    ASSERT_TRUE(made) << made.error().message;
}

}  // namespace rgwtest
