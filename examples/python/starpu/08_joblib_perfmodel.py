# A performance model: the time of log10 over N = 10 ... 9,000,000 calls, recorded under the
# symbol "log", then plotted. HETFLOW_EXAMPLE_MAX_N caps N (the tests use a small cap).
import os
import hetflow
import hetflow.joblib
from math import log10

limit = int(os.environ.get("HETFLOW_EXAMPLE_MAX_N", "9000000"))
for x in [10, 100, 1000, 10000, 100000, 1000000]:
    for N in range(x, x * 10, x):
        if N <= limit:
            hetflow.joblib.parallel(mode="normal", n_jobs=2, perfmodel="log")(hetflow.joblib.delayed(log10)(i + 1) for i in range(N))

print("plot written to", hetflow.joblib.perfmodel_plot(perfmodel="log"))
