# mode="future": an awaitable of the per-block results, and a message when they are ready.
import hetflow.joblib
import asyncio
from math import log10


async def main():
    fut = hetflow.joblib.parallel(mode="future", n_jobs=3, end_msg="The result is ready!")(
        hetflow.joblib.delayed(log10)(10 ** i) for i in range(10))
    print(await fut)

asyncio.run(main())
