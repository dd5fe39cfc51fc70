# Running on a subset of the cores: any 4 idle ones.
import hetflow
from hetflow import offload

hetflow.init(ncpus=16)


@offload(auto=4)
def helloworld(a, b):
    print("Hello World")
    return a + b


print(helloworld(10, 20))
