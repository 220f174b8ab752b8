"""The first flyjobs call: each call below runs on its own machine.

With no FLY_API_TOKEN set, flyjobs starts its embedded emulator of the Fly Machines API and the
"machines" are local processes, so this runs with no account:

    python examples/hello.py
"""

import flyjobs


@flyjobs.remote(memory_mb=256, timeout_s=60)
def square(x: int) -> int:
    return x * x


@flyjobs.remote(timeout_s=60)
def shout(word: str) -> str:
    print(f"shouting {word!r} on machine")
    return word.upper() + "!"


if __name__ == "__main__":
    print("square(7) =", square.remote(7))
    call = square.spawn(12)
    print("spawned", call)
    print("square(12) =", call.result(timeout_s=60))
    print("shout('hello') =", shout.remote("hello"))
    print("square.local(3) =", square.local(3))
