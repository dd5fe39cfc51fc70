// overhead, StarPU side: the workloads of hetflow.cpp on StarPU 1.3, printed as
// `starpu <workload>_ns_per_task <v>`, the median of REPEAT runs in one starpu_init.
//
//   independent  N empty tasks, no data (starpu_task_create + starpu_task_submit)
//   chain        N tasks each RW on one registered variable (starpu_task_insert)
//   fanout       N tasks each RW on its own variable, registered before the timer starts
//
// Usage: starpu [TASKS [REPEAT]]  (defaults 100000 and 3). STARPU_SCHED picks the scheduler;
// compare.sh runs it with STARPU_SCHED=eager STARPU_SILENT=1.
// Build: gcc -O2 starpu.c -o starpu $(pkg-config --cflags --libs starpu-1.3)
#include <starpu.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void noop(void* buffers[], void* arg) {
  (void)buffers;
  (void)arg;
}

static struct starpu_codelet no_data = {.cpu_funcs = {noop}, .nbuffers = 0, .name = "noop"};
static struct starpu_codelet one_rw = {.cpu_funcs = {noop}, .nbuffers = 1, .modes = {STARPU_RW}, .name = "noop_rw"};

static double now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

static void check(int rc, const char* what) {
  if (rc != 0) {
    fprintf(stderr, "starpu: %s failed: %s\n", what, strerror(-rc));
    exit(1);
  }
}

static double independent(long tasks) {
  double start = now_ns();
  for (long i = 0; i < tasks; i++) {
    struct starpu_task* task = starpu_task_create();
    task->cl = &no_data;
    check(starpu_task_submit(task), "starpu_task_submit");
  }
  starpu_task_wait_for_all();
  return (now_ns() - start) / (double)tasks;
}

static double chain(long tasks) {
  int value = 0;
  starpu_data_handle_t handle;
  starpu_variable_data_register(&handle, STARPU_MAIN_RAM, (uintptr_t)&value, sizeof value);
  double start = now_ns();
  for (long i = 0; i < tasks; i++) check(starpu_task_insert(&one_rw, STARPU_RW, handle, 0), "starpu_task_insert");
  starpu_task_wait_for_all();
  double elapsed = now_ns() - start;
  starpu_data_unregister(handle);
  return elapsed / (double)tasks;
}

static double fanout(long tasks) {
  int* values = calloc((size_t)tasks, sizeof *values);
  starpu_data_handle_t* handles = malloc((size_t)tasks * sizeof *handles);
  if (values == NULL || handles == NULL) {
    fprintf(stderr, "starpu: out of memory for %ld handles\n", tasks);
    exit(1);
  }
  for (long i = 0; i < tasks; i++) {
    starpu_variable_data_register(&handles[i], STARPU_MAIN_RAM, (uintptr_t)&values[i], sizeof values[i]);
  }
  double start = now_ns();
  for (long i = 0; i < tasks; i++) check(starpu_task_insert(&one_rw, STARPU_RW, handles[i], 0), "starpu_task_insert");
  starpu_task_wait_for_all();
  double elapsed = now_ns() - start;
  for (long i = 0; i < tasks; i++) starpu_data_unregister(handles[i]);
  free(handles);
  free(values);
  return elapsed / (double)tasks;
}

static int ascending(const void* a, const void* b) {
  double x = *(const double*)a;
  double y = *(const double*)b;
  return (x > y) - (x < y);
}

static double median(double* runs, int count) {
  qsort(runs, (size_t)count, sizeof *runs, ascending);
  return count % 2 == 1 ? runs[count / 2] : (runs[count / 2 - 1] + runs[count / 2]) / 2;
}

int main(int argc, char** argv) {
  long tasks = argc > 1 ? atol(argv[1]) : 100000;
  int repeat = argc > 2 ? atoi(argv[2]) : 3;
  if (argc > 3 || tasks < 1 || repeat < 1) {
    fprintf(stderr, "usage: %s [TASKS [REPEAT]]  (both at least 1)\n", argv[0]);
    return 2;
  }
  if (starpu_init(NULL) != 0) {
    fprintf(stderr, "starpu: starpu_init failed (no worker?)\n");
    return 77;
  }
  fprintf(stderr, "# starpu %d.%d: %u CPU workers; %ld tasks, median of %d runs\n", STARPU_MAJOR_VERSION,
          STARPU_MINOR_VERSION, starpu_cpu_worker_get_count(), tasks, repeat);

  struct {
    const char* metric;
    double (*run)(long);
  } workloads[] = {
      {"independent_ns_per_task", independent}, {"chain_ns_per_task", chain}, {"fanout_ns_per_task", fanout}};
  double* runs = malloc((size_t)repeat * sizeof *runs);
  for (size_t w = 0; w < sizeof workloads / sizeof workloads[0]; w++) {
    for (int r = 0; r < repeat; r++) runs[r] = workloads[w].run(tasks);
    // One write per line, so that it does not interleave with stdout in a shared terminal.
    char shown[1024] = "";
    for (int r = 0, used = 0; r < repeat && used < (int)sizeof shown; r++) {
      used += snprintf(shown + used, sizeof shown - (size_t)used, " %.0f", runs[r]);
    }
    fprintf(stderr, "# %s runs:%s\n", workloads[w].metric, shown);
    printf("starpu %s %.0f\n", workloads[w].metric, median(runs, repeat));
    fflush(stdout);
  }
  free(runs);
  starpu_shutdown();
  return 0;
}
