"""The floor of a resident one-shot's client: the least a Python command-line client does.

An interpreter, argparse, json and socket; a connection to the server, its status (the
served model's identity, which a client must check before it sends frame paths), one
classify request and its reply lines, and one printed line. No frameqc module is imported.
The benchmark times it against the same server as ``frameqc classify``, so the server's
own work is in both.

    FRAMEQC_SOCKET=PATH python bench/floor_client.py FRAME
"""

import argparse
import json
import os
import socket

if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--model")
    p.add_argument("frames", nargs="+")
    args = p.parse_args()
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(os.environ["FRAMEQC_SOCKET"])
    replies = sock.makefile("rb")
    sock.sendall(b'{"op": "status"}\n')
    json.loads(replies.readline())
    request = {"op": "classify", "paths": [os.path.abspath(f) for f in args.frames],
               "bin": None, "threshold": None}
    sock.sendall(json.dumps(request).encode() + b"\n")
    for name in args.frames:
        rec = json.loads(replies.readline())["record"]
        print(rec["label"], f"{rec['probability']:.3f}", name)
    replies.readline()
