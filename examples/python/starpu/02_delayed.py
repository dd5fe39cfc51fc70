# The delayed decorator: calling the function submits it as a task.
import hetflow


@hetflow.delayed
def add_deco(a, b):
    return a + b


print(add_deco(1, 2).result())
