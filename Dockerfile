# frameqc runtime image: onnxruntime, numpy, astropy; no torch.
#   docker build -t frameqc .
#   docker run -id --name frameqc -v /path/to/models:/models:ro \
#       -v /data/incoming:/data/incoming:ro frameqc
#   docker exec -i frameqc frameqc classify /data/incoming/FRAME.fits
# The default command keeps the model loaded (frameqc serve), so each docker exec is
# fast; classify still works on its own if the server is not up.
# With OpenVINO (bf16 models, and the fastest engine on some CPUs; docs/performance.md):
#   docker build --build-arg EXTRAS=openvino -t frameqc:openvino .
ARG BASE_IMAGE=python:3.12-slim

FROM ${BASE_IMAGE} AS build
ARG EXTRAS=""
WORKDIR /src
COPY pyproject.toml README.md ./
COPY runtime runtime
COPY export export
# sympy and mpmath come with onnxruntime for its offline tools only; inference never
# imports them, and they are a fifth of the image. The libraries' own test suites go too
# (astropy/tests stays: astropy imports it). Bytecode stays, checked against nothing (the
# image never changes): without it every docker exec one-shot compiled numpy, onnxruntime
# and frameqc from source, 0.18 s of a cold one-shot's 0.86 s here. With the openvino
# extra, only its CPU plugin and ONNX reader are kept: its GPU and NPU plugins (and their
# kernel cache) and its TensorFlow, PyTorch, Paddle, JAX and GGUF readers are 73 MB that
# frameqc never loads.
RUN python -m venv /opt/frameqc \
 && /opt/frameqc/bin/pip install --no-cache-dir --disable-pip-version-check \
        ".${EXTRAS:+[$EXTRAS]}" \
 && /opt/frameqc/bin/pip uninstall -y -q sympy mpmath \
 && for lib in intel_gpu_plugin intel_npu_plugin tensorflow_frontend tensorflow_lite_frontend \
        pytorch_frontend paddle_frontend jax_frontend gguf_frontend; do \
        rm -f /opt/frameqc/lib/python3*/site-packages/openvino/libs/libopenvino_$lib*; done \
 && rm -f /opt/frameqc/lib/python3*/site-packages/openvino/libs/cache.json \
 && /opt/frameqc/bin/pip uninstall -y -q pip \
 && find /opt/frameqc -type d -name tests -not -path "*/astropy/tests" -prune \
        -exec rm -rf {} + \
 && find /opt/frameqc -name __pycache__ -prune -exec rm -rf {} + \
 && /opt/frameqc/bin/python -m compileall -q -j 0 --invalidation-mode unchecked-hash \
        /opt/frameqc/lib

FROM ${BASE_IMAGE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="frameqc" \
      org.opencontainers.image.description="Torch-free ONNX classifier of Liverpool Telescope IO:O frames" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="MIT"
COPY --from=build /opt/frameqc /opt/frameqc
COPY models/*.toml /opt/frameqc/cards/
RUN useradd --system --uid 10001 --user-group --no-create-home --home-dir /nonexistent frameqc \
 && mkdir -p /models /data/incoming /run/frameqc \
 && chown frameqc:frameqc /run/frameqc
ENV PATH=/opt/frameqc/bin:${PATH} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    FRAMEQC_MODEL=/models/model.onnx \
    FRAMEQC_SOCKET=/run/frameqc/frameqc.sock
USER frameqc
WORKDIR /data/incoming
HEALTHCHECK --interval=60s --timeout=10s --start-period=120s --retries=3 \
    CMD ["frameqc", "status"]
CMD ["frameqc", "serve"]
