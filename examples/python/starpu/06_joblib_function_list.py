# A list of delayed calls to functions of different kinds.
import hetflow.joblib

# generate a list to store functions
g_func = []


# function no input no output print hello world
def hello():
    print("Example 1: Hello, world!")


g_func.append(hetflow.joblib.delayed(hello)())


# function has 2 int inputs and 1 int output
def multi(a, b):
    res_multi = a * b
    print("Example 2: The result of ", a, "*", b, "is", res_multi)
    return res_multi


g_func.append(hetflow.joblib.delayed(multi)(2, 3))


# function has 4 float inputs and 1 float output
def add(a, b, c, d):
    res_add = a + b + c + d
    print("Example 3: The result of ", a, "+", b, "+", c, "+", d, "is", res_add)
    return res_add


g_func.append(hetflow.joblib.delayed(add)(1.2, 2.5, 3.6, 4.9))


# function has 2 int inputs 1 float input and 1 float output 1 int output
def sub(a, b, c):
    res_sub1 = a - b - c
    res_sub2 = a - b
    print("Example 4: The result of ", a, "-", b, "-", c, "is", res_sub1, "and the result of", a, "-", b, "is", res_sub2)
    return res_sub1, res_sub2


g_func.append(hetflow.joblib.delayed(sub)(6, 2, 5.9))

# input is iterable function list
hetflow.joblib.parallel(mode="normal", n_jobs=2)(g_func)
