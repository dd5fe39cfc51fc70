"""What the programs of this folder share (each runs as a script, with this folder on its path)."""


def expect_raises(kind, call, words):
    """Calls ``call``, which must raise ``kind`` with each of ``words`` in its message; returns
    the error."""
    try:
        call()
    except kind as error:
        for word in words:
            assert word in str(error), f"{word!r} not in {error}"
        return error
    raise AssertionError(f"{call} did not raise {kind.__name__}")
