# Offloading a Python function: every core prints and returns a + b.
import hetflow
from hetflow import offload

hetflow.init(ncpus=16)  # the tutorial's chip has 16 cores


@offload
def helloworld(a, b):
    print("Hello World")
    return a + b


print(helloworld(10, 20))
