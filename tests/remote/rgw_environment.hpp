// The remote suite's object store: a real Ceph RGW started once for the test
// binary by tests/remote/rgw.sh (a GoogleTest Environment) and stopped after
// the last test. When it cannot start, every test fails with the script's
// reason; none is skipped.
#pragma once

#include <gtest/gtest.h>

#include <atomic>
#include <string>

#include "remote/s3_client.hpp"
#include "remote/s3_config.hpp"

namespace rgwtest {

struct Rgw {
    std::string endpoint;
    std::string access_key_id;
    std::string secret_access_key;
    std::string error;   // why it did not start; "" when it runs

    // A config for the test's client: short backoff so retry tests stay fast.
    ringpager::remote::S3Config config() const;
};

// The store of this test binary (started by main before any test runs).
const Rgw& rgw();

// Registers the Environment that starts and stops the store.
void add_rgw_environment();

// Fails the current test with the reason when the store is not running.
#define REQUIRE_RGW() ASSERT_EQ(::rgwtest::rgw().error, "") << "the test object store (Ceph RGW) did not start"

// A bucket name no other test in this run uses: "t<pid>-<n>-<tag>".
std::string unique_bucket(const std::string& tag);

// A client on the store with a fresh bucket made for the test.
struct BucketFixture : public ::testing::Test {
    void SetUp() override;
    std::unique_ptr<ringpager::remote::S3Client> client;
    std::string bucket;
    ringpager::remote::S3Location at(const std::string& key) const { return {bucket, key}; }
};

}  // namespace rgwtest
