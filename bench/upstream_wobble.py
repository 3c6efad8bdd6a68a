"""The upstream mirror-wobble server, as docs/upstream.md describes it: the benchmark's
baseline for images at their own size (needs the export extra).

torch, torchvision's vgg16 with the transfer head, the state_dict; TCP, one client at a
time: an 8-byte big-endian length, the image bytes, then ``decision + " " +
str(numpy.round(p, 3))`` with p the top class's float32 probability (Wobble only at 0.6
or more). No resize, no binning: the JPEG -> RGB -> /255 -> CHW at its own size.

Usage: python bench/upstream_wobble.py WEIGHTS.pt PORT   (0: any free port, printed)
"""

import io
import socket
import sys

import numpy as np
import torch
from PIL import Image
from torch import nn
from torchvision import models

LABELS, THRESHOLD = ("Wobble", "OK"), 0.6


def recv_exact(conn: socket.socket, n: int) -> bytes:
    chunks = []
    while n:
        chunk = conn.recv(min(n, 1 << 20))
        if not chunk:
            raise ConnectionError("closed")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def main(weights: str, port: int) -> None:
    model = models.vgg16(weights=None)
    model.classifier[6] = nn.Sequential(nn.Linear(4096, 256), nn.ReLU(), nn.Dropout(0.5),
                                        nn.Linear(256, len(LABELS)), nn.LogSoftmax(dim=1))
    model.load_state_dict(torch.load(weights, map_location="cpu"))
    model.eval()
    server = socket.create_server(("127.0.0.1", port))
    print(server.getsockname()[1], flush=True)
    while True:
        conn, _ = server.accept()
        with conn:
            size = int.from_bytes(recv_exact(conn, 8), "big")
            img = Image.open(io.BytesIO(recv_exact(conn, size))).convert("RGB")
            x = torch.from_numpy(np.asarray(img, np.float32).transpose(2, 0, 1) / 255)[None]
            with torch.no_grad():
                p, i = torch.exp(model(x)).topk(1)
            p, label = p.numpy()[0][0], LABELS[int(i)]
            if label == "Wobble" and p < THRESHOLD:
                label = "OK"
            conn.sendall((label + " " + str(np.round(p, 3))).encode())


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
