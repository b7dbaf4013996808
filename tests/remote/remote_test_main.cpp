// The remote suite's main: starts the test object store once for all tests.
#include <gtest/gtest.h>

#include "rgw_environment.hpp"

int main(int argc, char** argv) {
    ::testing::InitGoogleTest(&argc, argv);
    rgwtest::add_rgw_environment();
    return RUN_ALL_TESTS();
}
