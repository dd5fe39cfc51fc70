# Awaiting the future of a task inside an asyncio coroutine.
import hetflow
import asyncio


def add(a, b):
    return a + b


async def main():
    fut = hetflow.task_submit(add, 1, 2)
    res = await fut
    print("The result of function is", res)

asyncio.run(main())
