# Short cuts: offload_multiple (asynchronous, on 8 cores) and offload_single (one core).
import hetflow
from hetflow import offload_multiple, offload_single, waitAll

hetflow.init(ncpus=16)


@offload_multiple(cores=8)
def adder(a, b):
    return a + b


@offload_single
def subtractor(a, b):
    return a - b


h1 = adder(10, 20)
h2 = subtractor(10, 20)
print(waitAll(h1, h2))
