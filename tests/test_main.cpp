#include <gtest/gtest.h>

#include "model/runtime.h"

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  bakallm::set_threads(0);
  return RUN_ALL_TESTS();
}
