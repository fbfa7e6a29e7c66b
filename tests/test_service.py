"""`masksynth serve`: the service in-process and over a real socket, and a fuzz pass."""

import http.client
import io
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import photo_with_one_face, side_by_side
from fastapi.testclient import TestClient
from imaging import png_claiming_size
from PIL import Image

from masksynth.config import ServiceConfig
from masksynth.deploy.predictor import FacePredictor
from masksynth.deploy.service import create_app


@pytest.fixture(scope="module")
def client(model):
    checkpoint, _ = model
    config = ServiceConfig(max_body_bytes=2_000_000, max_concurrency=4)
    with TestClient(create_app(checkpoint, config)) as test_client:
        yield test_client


def test_predict_answers_the_same_records_as_the_command(client, model):
    checkpoint, root = model
    photo = photo_with_one_face(root, "without_mask")
    data = photo.read_bytes()
    raw = client.post("/predict", content=data, headers={"content-type": "image/jpeg"})
    upload = client.post("/predict", files={"file": ("face.jpg", data, "image/jpeg")})
    assert raw.status_code == upload.status_code == 200, raw.text
    rgb = np.asarray(Image.open(photo).convert("RGB"))
    expected = FacePredictor(checkpoint, "cpu").predict(rgb)
    assert raw.json()["faces"] == upload.json()["faces"] == expected
    assert raw.json()["n_faces"] == 1 and raw.json()["width"] == rgb.shape[1]


def test_health_ready_version_metrics_and_page(client, model):
    checkpoint, _ = model
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/ready").status_code == 200
    version = client.get("/version").json()
    import hashlib

    assert version["sha256"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert version["classes"] == ["with_mask", "without_mask"]
    client.post("/predict", content=b"", headers={"content-type": "image/png"})
    metrics = client.get("/metrics").text
    assert 'masksynth_requests_total{path="/predict",status="422"}' in metrics
    assert "masksynth_predict_seconds_bucket" in metrics
    assert 'masksynth_errors_total{status="422"}' in metrics
    page = client.get("/")
    assert page.status_code == 200 and "getUserMedia" in page.text


def test_bad_requests_get_a_4xx_with_a_reason(client, model):
    _, root = model
    photo = photo_with_one_face(root, "with_mask").read_bytes()
    cases = {
        "zero bytes": (b"", "image/jpeg", 422),
        "truncated": (photo[: len(photo) // 4], "image/jpeg", 422),
        "not an image": (b"hello world", "application/octet-stream", 415),
        "wrong type": (photo, "text/plain", 415),
        "json": (b'{"a": 1}', "application/json", 415),
        "too big": (b"\xff" * 2_100_000, "image/jpeg", 413),
        "image bomb": (png_claiming_size(60000, 60000), "image/png", 413),
        "empty form": (b"--x\r\n\r\n--x--\r\n", "multipart/form-data; boundary=x", 400),
    }
    for name, (body, kind, status) in cases.items():
        answer = client.post("/predict", content=body, headers={"content-type": kind})
        assert answer.status_code == status, (name, answer.status_code, answer.text)
        reason = answer.json()["error"]
        assert reason and "\n" not in reason, name
    assert client.get("/health").status_code == 200


def _free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _request(url, data=None, kind="image/jpeg"):
    request = urllib.request.Request(url, data=data, headers={"Content-Type": kind})
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def _start_server(checkpoint, *options):
    """`masksynth serve` in a child process on a free loopback port, once it is ready."""
    port = _free_port()
    child = subprocess.Popen(
        [sys.executable, "-m", "masksynth.cli", "serve", str(checkpoint), "--port", str(port)]
        + list(options),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if _request(url + "/ready")[0] == 200:
                return url, child
        except OSError:
            time.sleep(0.3)
    child.kill()
    pytest.fail(f"the service did not start: {child.communicate()[1][-2000:]}")


@pytest.fixture(scope="module")
def server(model):
    checkpoint, _ = model
    url, child = _start_server(checkpoint)
    yield url, child
    child.terminate()
    child.wait(timeout=30)


def test_the_service_over_a_real_socket(server, model):
    url, child = server
    _, root = model
    photos = [
        photo_with_one_face(root, label).read_bytes() for label in ("with_mask", "without_mask")
    ]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda i: _request(url + "/predict", photos[i % 2]), range(16)))
    assert all(status == 200 for status, _ in answers), answers
    labels = {json.loads(body)["faces"][0]["label"] for _, body in answers}
    assert labels <= {"with_mask", "without_mask"}
    assert child.poll() is None


def test_a_fuzz_pass_leaves_the_service_alive(server, model):
    """Random bytes, truncations, bombs, odd types and sizes: every answer a 4xx with a
    reason, and the service still answers a good photo afterwards."""
    url, child = server
    _, root = model
    good = photo_with_one_face(root, "without_mask").read_bytes()
    rng = random.Random(7)
    png = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 10, 10)).save(png, format="PNG")
    seeds = [good, png.getvalue(), png_claiming_size(100000, 100000)]
    kinds = [
        "image/jpeg",
        "image/png",
        "application/octet-stream",
        "text/html",
        "video/mp4",
        "multipart/form-data",  # no boundary
        "multipart/form-data; boundary=other",
        "",
    ]
    statuses = []
    for _ in range(80):
        body = bytearray(rng.choice(seeds))
        kind = rng.choice(kinds)
        mutation = rng.randrange(7)
        if mutation == 0:
            body = body[: rng.randrange(len(body))]
        elif mutation == 1:
            for _ in range(rng.randrange(1, 50)):
                body[rng.randrange(len(body))] = rng.randrange(256)
        elif mutation == 2:
            body = bytearray(rng.randbytes(rng.randrange(0, 5000)))
        elif mutation == 3:
            body = bytearray(body[:20]) + bytearray(rng.randbytes(200))
        elif mutation >= 5:  # a multipart upload of it, whole, cut short, or with no file
            head = b'Content-Disposition: form-data; name="file"; filename="x.jpg"\r\n\r\n'
            if rng.random() < 0.3:
                head = b'Content-Disposition: form-data; name="note"\r\n\r\n'
            body = b"--fuzz\r\n" + head + bytes(body) + b"\r\n--fuzz--\r\n"
            body = body[: rng.randrange(len(body))] if mutation == 6 else body
            kind = "multipart/form-data; boundary=fuzz"
        status, answer = _request(url + "/predict", bytes(body), kind)
        statuses.append(status)
        if status != 200:  # a lucky mutation may still decode; everything else is refused
            assert 400 <= status < 500, (status, answer[:200])
            assert json.loads(answer)["error"]
    assert child.poll() is None
    status, answer = _request(url + "/predict", good)
    assert status == 200 and json.loads(answer)["n_faces"] == 1
    assert sum(s >= 400 for s in statuses) > 40


def test_the_size_limit_holds_before_the_body_is_read(server):
    """A declared length over the limit (10 MB) is refused before any body byte is sent;
    a chunked upload that passes it is refused although it never ends."""
    url, child = server
    host, port = url.removeprefix("http://").split(":")
    for declared in (True, False):
        connection = http.client.HTTPConnection(host, int(port), timeout=60)
        connection.putrequest("POST", "/predict")
        connection.putheader("Content-Type", "image/png")
        if declared:
            connection.putheader("Content-Length", str(200_000_000))
            connection.endheaders()
        else:
            connection.putheader("Transfer-Encoding", "chunked")
            connection.endheaders()
            chunk = b"\x00" * 1_000_000
            for _ in range(11):  # 11 MB, and never the closing chunk
                connection.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        answer = connection.getresponse()
        assert answer.status == 413 and "limit" in json.loads(answer.read())["error"]
        connection.close()
    assert child.poll() is None


CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


def _y4m(path, rgb, frames=10):
    """A Y4M clip of one still frame: Chromium's fake webcam plays it in a loop."""
    height, width = rgb.shape[:2]
    yuv = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2YUV_I420)
    with open(path, "wb") as handle:
        handle.write(f"YUV4MPEG2 W{width} H{height} F10:1 Ip A1:1 C420jpeg\n".encode())
        for _ in range(frames):
            handle.write(b"FRAME\n" + yuv.tobytes())
    return path


@pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER), reason="apt-get install chromium chromium-driver"
)
def test_the_web_page_in_a_real_browser(server, model, tmp_path):
    """Headless Chromium: a photo upload draws both faces' boxes; the webcam (Chromium's fake
    camera playing a clip with a face) is classified live."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, child = server
    _, root = model
    photos = [photo_with_one_face(root, k) for k in ("with_mask", "without_mask")]
    frame = side_by_side(*photos)
    Image.fromarray(frame).save(tmp_path / "two.jpg", quality=92)
    one = side_by_side(photos[1])
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-video-capture={_y4m(tmp_path / 'cam.y4m', one)}",
        "--window-size=1000,1400",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        wait = WebDriverWait(driver, 60)
        driver.get(url + "/")
        wait.until(lambda d: "sha256" in d.find_element(By.ID, "model").text)
        driver.find_element(By.ID, "file").send_keys(str(tmp_path / "two.jpg"))
        wait.until(lambda d: "2 face(s)" in d.find_element(By.ID, "status").text)
        labels = [li.text for li in driver.find_elements(By.CSS_SELECTOR, "#faces li")]
        assert len(labels) == 2, labels
        painted = driver.execute_script(
            "const c = document.getElementById('view');return [c.width, c.height];"
        )
        assert painted == [640, 480]
        driver.save_screenshot(str(tmp_path / "upload.png"))
        driver.find_element(By.ID, "camera").click()
        wait.until(lambda d: "webcam: 1 face(s)" in d.find_element(By.ID, "status").text)
        driver.save_screenshot(str(tmp_path / "webcam.png"))
        shots = os.environ.get("MASKSYNTH_SCREENSHOTS")
        if shots:  # for a person to look at
            for name in ("upload.png", "webcam.png"):
                shutil.copy(tmp_path / name, Path(shots) / name)
    finally:
        driver.quit()
    assert child.poll() is None


def _open_upload(url):
    """A POST /predict whose body is still arriving: it holds a slot until closed."""
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    connection.putrequest("POST", "/predict")
    connection.putheader("Content-Type", "image/jpeg")
    connection.putheader("Transfer-Encoding", "chunked")
    connection.endheaders()
    connection.send(b"4\r\n\xff\xd8\xff\xe0\r\n")
    return connection


def test_a_client_that_trickles_its_request_is_cut_off(model):
    """Slowloris: a request head trickled a byte at a time is closed after --header-timeout
    (uvicorn alone would keep it for ever); a body that stops coming gets 408 after
    --body-timeout and frees its place; the service answers on."""
    checkpoint, root = model
    url, child = _start_server(checkpoint, "--header-timeout", "1", "--body-timeout", "2")
    try:
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as trickle:
            trickle.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\n")
            started, closed = time.monotonic(), False
            while time.monotonic() - started < 8:
                try:
                    trickle.sendall(b"X")  # one byte of a header that never ends
                    trickle.settimeout(0.3)
                    closed = trickle.recv(100) == b""
                except TimeoutError:
                    continue
                except OSError:
                    closed = True
                if closed:
                    break
            assert closed and time.monotonic() - started < 5
        slow = _open_upload(url)
        started = time.monotonic()
        answer = slow.getresponse()
        assert answer.status == 408 and "2 s" in json.loads(answer.read())["error"]
        assert answer.getheader("Connection") == "close"  # the unread rest cannot hold it
        assert 1.5 < time.monotonic() - started < 10
        slow.close()
        photo = photo_with_one_face(root, "with_mask").read_bytes()
        assert _request(url + "/predict", photo)[0] == 200
        assert child.poll() is None
    finally:
        child.terminate()
        child.wait(timeout=30)


def test_requests_over_the_concurrency_limit_get_503_at_once(server, model):
    """8 uploads in flight (the default limit): the 9th is answered 503 with Retry-After
    at once; when they go away, the service answers again."""
    url, child = server
    _, root = model
    slow = [_open_upload(url) for _ in range(ServiceConfig.max_concurrency)]
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            status, body = _request(url + "/metrics")
            if f"masksynth_predict_in_flight {ServiceConfig.max_concurrency}.0" in body.decode():
                break
            time.sleep(0.1)
        photo = photo_with_one_face(root, "with_mask").read_bytes()
        request = urllib.request.Request(
            url + "/predict", data=photo, headers={"Content-Type": "image/jpeg"}
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=30)
        assert refused.value.code == 503 and refused.value.headers["Retry-After"] == "1"
        assert "busy" in json.loads(refused.value.read())["error"]
    finally:
        for connection in slow:
            connection.close()
    deadline = time.monotonic() + 30
    while _request(url + "/predict", photo)[0] != 200:
        assert time.monotonic() < deadline, "the slots were never freed"
        time.sleep(0.2)
    assert child.poll() is None
