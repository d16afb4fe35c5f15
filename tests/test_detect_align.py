"""Image reading, YuNet detection (both backends), 5-point alignment, on real LFW photos."""

from __future__ import annotations

import subprocess
import sys
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.align import (ARCFACE_TEMPLATE, align, alignment_matrix, similarity_matrix,
                        template, transform_points)
from edge.detect import (DETECTORS, Face, YuNetDetector, create_detector, nms,
                         register_detector)
from edge.errors import ConfigError, ImageError, ModelFileError, NoFaceError
from edge.face import detect_and_align
from edge.image import read_image
from edge.paths import data_file

LFW_TGZ = "lfw/lfw-a-gray.tgz"
LFW_SAMPLES = ["AJ_Cook_0001", "George_W_Bush_0001", "Serena_Williams_0010",
               "Tony_Blair_0005", "Colin_Powell_0003", "Abdullah_Gul_0013"]
BACKENDS = ["opencv", "onnxruntime"]


def _lfw_path(stem: str) -> str:
    """Path inside the LFW tgz of an image stem such as 'AJ_Cook_0001'."""
    return f"lfw/{stem.rsplit('_', 1)[0]}/{stem}.jpg"


@pytest.fixture(scope="module")
def lfw_bytes() -> dict[str, bytes]:
    """Encoded JPEG bytes of the sample LFW images, read straight from the tgz."""
    with tarfile.open(data_file(LFW_TGZ)) as tar:
        return {stem: tar.extractfile(_lfw_path(stem)).read() for stem in LFW_SAMPLES}


@pytest.fixture(scope="module")
def detectors() -> dict[str, YuNetDetector]:
    return {b: YuNetDetector(backend=b) for b in BACKENDS}


def _assert_plausible(face: Face, shape: tuple[int, ...]) -> None:
    """Landmarks in anatomical order, inside the box, face near the image centre."""
    (rex, rey), (lex, ley), (nx, ny), (rmx, rmy), (lmx, lmy) = face.landmarks
    assert rex < nx < lex, "eyes must straddle the nose, subject's right eye at smaller x"
    assert rmx < lmx
    assert max(rey, ley) < ny < min(rmy, lmy), "eyes above nose above mouth"
    x, y, w, h = face.box
    assert np.all(face.landmarks[:, 0] > x) and np.all(face.landmarks[:, 0] < x + w)
    assert np.all(face.landmarks[:, 1] > y) and np.all(face.landmarks[:, 1] < y + h)
    # LFW centres the named person; the top face must be them, not a bystander.
    cx, cy = x + w / 2, y + h / 2
    assert abs(cx - shape[1] / 2) < 30 and abs(cy - shape[0] / 2) < 30


@pytest.mark.realdata
class TestDetect:
    @pytest.mark.parametrize("backend", BACKENDS)
    def test_finds_the_face_on_lfw(self, lfw_bytes, detectors, backend):
        for stem, data in lfw_bytes.items():
            image = read_image(data)
            faces = detectors[backend].detect(image)
            assert faces, f"no face in {stem}"
            assert faces[0].score > 0.8
            assert faces[0].landmarks.shape == (5, 2) and faces[0].landmarks.dtype == np.float32
            _assert_plausible(faces[0], image.shape)
            assert [f.score for f in faces] == sorted((f.score for f in faces), reverse=True)

    def test_backends_agree(self, lfw_bytes, detectors):
        for stem, data in lfw_bytes.items():
            image = read_image(data)
            a, b = (detectors[k].detect(image) for k in BACKENDS)
            assert len(a) == len(b), stem
            for fa, fb in zip(a, b):
                assert np.abs(fa.landmarks - fb.landmarks).max() < 1.0, stem
                assert np.allclose(fa.box, fb.box, atol=1.0) and abs(fa.score - fb.score) < 1e-3

    def test_large_image_is_scaled_back_to_image_coordinates(self, lfw_bytes, detectors):
        image = read_image(lfw_bytes["AJ_Cook_0001"])
        big = cv2.resize(image, (1000, 1000), interpolation=cv2.INTER_CUBIC)
        small_face = detectors["opencv"].detect(image)[0]
        big_face = detectors["opencv"].detect(big)[0]
        _assert_plausible(big_face, big.shape)
        # 1000 -> 640 -> back: the landmarks should land where 4x the 250px ones are. YuNet
        # itself moves landmarks by up to ~5 px (at 250 px) between input scales.
        assert np.abs(big_face.landmarks / 4 - small_face.landmarks).max() < 6

    def test_flat_image_has_no_face(self, detectors):
        gray = np.full((240, 320, 3), 128, np.uint8)
        for det in detectors.values():
            assert det.detect(gray) == []
        with pytest.raises(NoFaceError, match="no face found"):
            detect_and_align(gray, detectors["opencv"])

    def test_grayscale_array_accepted(self, lfw_bytes, detectors):
        gray = cv2.cvtColor(read_image(lfw_bytes["Tony_Blair_0005"]), cv2.COLOR_BGR2GRAY)
        assert detectors["opencv"].detect(gray)

    def test_bad_arrays_and_options(self, detectors):
        with pytest.raises(ImageError):
            detectors["opencv"].detect(np.zeros((10, 10, 3), np.float32))
        with pytest.raises(ImageError):
            detectors["opencv"].detect(np.zeros((0, 0, 3), np.uint8))
        with pytest.raises(ConfigError, match="opencv"):
            YuNetDetector(backend="tensorrt")
        with pytest.raises(ConfigError, match="640"):
            YuNetDetector(backend="onnxruntime", input_size=(320, 320))
        with pytest.raises(ModelFileError, match="not found"):
            YuNetDetector(model_path="/nonexistent/yunet.onnx")

    def test_opencv_detector_is_created_quietly(self, capfd):
        # OpenCV 5 printed a graph-engine warning on every command that made a detector.
        level = cv2.utils.logging.getLogLevel()
        YuNetDetector(backend="opencv")
        assert "WARN" not in capfd.readouterr().err
        assert cv2.utils.logging.getLogLevel() == level

    def test_registry(self):
        assert DETECTORS.get("yunet") is YuNetDetector
        assert isinstance(create_detector("yunet", backend="onnxruntime"), YuNetDetector)
        with pytest.raises(ConfigError, match="yunet"):
            create_detector("retinaface9000")
        with pytest.raises(ValueError, match="already registered"):
            register_detector("yunet")(YuNetDetector)


@pytest.mark.realdata
class TestAlignOnLfw:
    @pytest.mark.parametrize("size", [(112, 112), (112, 96), (128, 128)])
    def test_landmarks_land_on_template(self, lfw_bytes, detectors, size):
        # A similarity cannot bend a real face onto the template, so some residual is
        # inherent: over 300 LFW faces its mean per face is 2.6 px median, 4.7 px at p99.
        errors = []
        for data in lfw_bytes.values():
            face, crop = detect_and_align(data, detectors["onnxruntime"], size)[0]
            assert crop.shape == (*size, 3) and crop.dtype == np.uint8
            moved = transform_points(alignment_matrix(face.landmarks, size), face.landmarks)
            errors.append(np.linalg.norm(moved - template(size), axis=1).mean() * 112 / size[0])
        assert np.median(errors) < 3.0 and max(errors) < 5.0, np.round(errors, 2)

    def test_redetected_landmarks_match_template(self, lfw_bytes, detectors):
        # Detect again on the aligned crop: proves the crop really holds the face where the
        # template says, not just that the maths is self-consistent. This adds YuNet's own
        # jitter (median 3.6 px over 300 LFW faces), hence the looser bound.
        errors = []
        for data in lfw_bytes.values():
            _, crop = detect_and_align(data, detectors["opencv"], (112, 112))[0]
            canvas = np.zeros((224, 224, 3), np.uint8)
            canvas[56:168, 56:168] = crop
            again = detectors["opencv"].detect(canvas)
            assert again
            errors.append(np.linalg.norm(again[0].landmarks - 56 - ARCFACE_TEMPLATE, axis=1).mean())
        assert np.median(errors) < 5.0 and max(errors) < 8.0, np.round(errors, 2)


class TestAlignMaths:
    def test_template_sizes(self):
        assert np.allclose(template((112, 112)), ARCFACE_TEMPLATE)
        assert np.allclose(template((112, 96))[0], [30.2946, 51.6963], atol=1e-4)
        assert np.allclose(template((128, 128)), ARCFACE_TEMPLATE * 128 / 112, atol=1e-4)
        with pytest.raises(ConfigError):
            template((8, 8))

    def test_recovers_a_known_similarity(self):
        angle, scale, shift = np.deg2rad(17), 1.7, np.array([5.0, -3.0])
        rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        src = ARCFACE_TEMPLATE.astype(np.float64)
        dst = src @ rot.T + shift
        matrix = similarity_matrix(src, dst)
        assert np.allclose(matrix[:, :2], rot) and np.allclose(matrix[:, 2], shift)
        back = transform_points(cv2.invertAffineTransform(matrix), dst)
        assert np.allclose(back, src, atol=1e-4)

    def test_never_reflects(self):
        mirrored = ARCFACE_TEMPLATE * [-1, 1]
        matrix = similarity_matrix(mirrored, ARCFACE_TEMPLATE)
        assert np.linalg.det(matrix[:, :2]) > 0

    def test_align_output_and_bad_landmarks(self):
        image = np.zeros((200, 200, 3), np.uint8)
        assert align(image, ARCFACE_TEMPLATE + 40).shape == (112, 112, 3)
        with pytest.raises(ValueError, match="5, 2"):
            alignment_matrix(np.zeros((4, 2)))
        with pytest.raises(ValueError, match="coincide"):
            alignment_matrix(np.ones((5, 2)))

    def test_nms_drops_overlaps(self):
        boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [50, 50, 10, 10]], np.float32)
        keep = nms(boxes, np.array([0.9, 0.95, 0.5]), 0.3)
        assert keep.tolist() == [1, 2]


@pytest.mark.realdata
class TestReadImage:
    def test_lfw_gray_becomes_bgr(self, lfw_bytes, tmp_path):
        path = tmp_path / "face.jpg"
        path.write_bytes(lfw_bytes["AJ_Cook_0001"])
        image = read_image(path)
        assert image.shape == (250, 250, 3) and image.dtype == np.uint8
        assert np.array_equal(image, read_image(str(path)))

    def test_grayscale_png(self, tmp_path):
        ok, png = cv2.imencode(".png", np.full((20, 30), 7, np.uint8))
        assert read_image(png.tobytes()).shape == (20, 30, 3)

    def test_missing_empty_and_folder(self, tmp_path):
        with pytest.raises(ImageError, match="does not exist"):
            read_image(tmp_path / "nope.jpg")
        (tmp_path / "empty.jpg").write_bytes(b"")
        with pytest.raises(ImageError, match="empty"):
            read_image(tmp_path / "empty.jpg")
        with pytest.raises(ImageError, match="folder"):
            read_image(tmp_path)

    def test_not_an_image(self, tmp_path):
        with pytest.raises(ImageError, match="not a readable image"):
            read_image(b"name,score\nalice,1\n")
        (tmp_path / "notes.jpg").write_text("hello")
        with pytest.raises(ImageError, match="not a readable image"):
            read_image(tmp_path / "notes.jpg")

    def test_truncated_jpeg(self, lfw_bytes):
        data = lfw_bytes["George_W_Bush_0001"]
        with pytest.raises(ImageError, match="truncated JPEG"):
            read_image(data[: len(data) // 2])
        with pytest.raises(ImageError):
            read_image(data[:100])

    def test_wrong_type(self):
        with pytest.raises(TypeError):
            read_image(12345)


def test_modules_stay_lean():
    # The device install has no torch, and onnxruntime must load only when asked for.
    code = ("import sys, edge.image, edge.detect, edge.align, edge.face; "
            "bad = [m for m in ('torch', 'onnxruntime', 'distill', 'quantize') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stdout + done.stderr
