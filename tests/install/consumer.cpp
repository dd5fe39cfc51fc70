#include <hetflow/hetflow.hpp>

#include <cstdio>

int main() {
  hetflow::Runtime rt(hetflow::Config{.ncpus = 2});
  int sum = rt.submit([](int a, int b) { return a + b; }, 40, 2).get();
  std::printf("consumer of hetflow %s: %d\n", HETFLOW_VERSION_STRING, sum);
  return sum == 42 ? 0 : 1;
}
