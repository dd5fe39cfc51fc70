# Arguments to the call override the decorator: asynchronously, on cores 9 and 10 only.
import hetflow
from hetflow import offload

hetflow.init(ncpus=16)


@offload
def helloworld(a, b):
    print("Hello World")
    return a + b


h = helloworld(10, 20, target=[9, 10], asynchronous=True)
print(h.wait())
