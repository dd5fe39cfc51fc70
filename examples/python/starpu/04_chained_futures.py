# A future passed to the next task: sub waits for add and receives its result.
import asyncio
import hetflow
import time


def add(a, b):
    time.sleep(10)
    print("The first result is ready!")
    return a + b


def sub(x, a):
    print("The second result is ready!")
    return x - a


async def main():
    fut1 = hetflow.task_submit(add, 1, 2)
    fut2 = hetflow.task_submit(sub, fut1, 1)
    res = await fut2
    print(res)

asyncio.run(main())
