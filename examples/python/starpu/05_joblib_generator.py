# joblib-style parallel loop over a generator of delayed calls.
from math import log10
import hetflow.joblib

print([log10(10 ** i) for i in range(10)])
print(hetflow.joblib.parallel(mode="normal", n_jobs=2)(hetflow.joblib.delayed(log10)(10 ** i) for i in range(10)))
