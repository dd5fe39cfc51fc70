# Non-blocking asynchronous kernel launches ("async" is spelled "asynchronous" in Python 3).
import hetflow
from hetflow import offload

hetflow.init(ncpus=16)


@offload(asynchronous=True)
def helloworld(a, b):
    print("Hello World")
    return a + b


handler = helloworld(10, 20)
print(handler.wait())
