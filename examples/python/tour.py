"""A tour of hetflow through the seeds' examples: offload to cores, asynchronous handles, subsets
of cores, chained futures, a joblib loop with a performance model, and its plot. Prints what
ran where and how long. Run by `make run`."""
import os
import time
from contextlib import contextmanager
from math import log10

import hetflow
import hetflow.joblib
from hetflow import coreid, offload, offload_multiple, offload_single, waitAll


@contextmanager
def step(title):
    print(f"\n== {title}")
    start = time.perf_counter()
    yield
    print(f"   ({time.perf_counter() - start:.3f} s)")


def where():
    return f"pid {os.getpid()}"


@offload
def helloworld(a, b):
    return coreid(), a + b


@offload_multiple(cores=8)
def adder(a, b):
    return a + b


@offload_single
def subtractor(a, b):
    return a - b


@offload(asynchronous=True)
def nap(seconds_per_core):
    time.sleep(seconds_per_core * (coreid() % 4))
    return coreid()


def add(a, b):
    time.sleep(0.2)
    return a + b


def sub(x, a):
    return x - a, where()


def main():
    session = hetflow.init(ncpus=16)
    print(f"hetflow: {session.ncpus} CPU workers, {session.nprocs} cores (worker processes), "
          f"scheduler '{session.scheduler}', default executor '{session.executor}'; host {where()}")

    with step("@offload: helloworld(10, 20) on every core -> (core, value)"):
        print("  ", helloworld(10, 20))

    with step("asynchronous launch, results collected as kernels finish (wait_any)"):
        handle = nap(0.05)
        order = []
        while handle.cores:
            order.append(handle.wait_any()[0])
        print("   cores in the order they finished:", order)

    with step("subsets: auto=4 idle cores, then target=[9, 10]"):
        print("   auto=4      ->", helloworld(10, 20, auto=4))
        print("   target=9,10 ->", helloworld(10, 20, target=[9, 10]))

    with step("offload_multiple(cores=8) and offload_single, waitAll"):
        print("  ", waitAll(adder(10, 20), subtractor(10, 20)))

    with step("futures chained: sub waits for add and receives its value"):
        for executor in ("process", "thread"):
            submit = hetflow.task_submit.options(executor=executor)
            fut1 = submit(add, 1, 2)
            fut2 = submit(sub, fut1, 1)
            value, ran_on = fut2.result()
            print(f"   executor={executor:7} -> {value} (ran in {ran_on})")

    with step("joblib with a performance model: log10 over N calls in 2 blocks, symbol 'tour-log'"):
        for n in (1000, 2000, 5000, 10000, 20000, 50000, 100000):
            hetflow.joblib.parallel(n_jobs=2, perfmodel="tour-log")(hetflow.joblib.delayed(log10)(i + 1) for i in range(n))
        from hetflow.perfmodel import show

        print("\n".join("   " + line for line in show("tour-log").splitlines()))

    with step("what the model learned, plotted"):
        print("   plot written to", hetflow.perfmodel_plot(perfmodel="tour-log"))

    hetflow.shutdown()


if __name__ == "__main__":
    main()
