# Submitting a task: task_submit(func, *args) returns a future of func(*args).
import hetflow


def add(a, b):
    return a + b


print(hetflow.task_submit(add, 1, 2).result())
