from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ColorOrder(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    COLOR_ORDER_UNSPECIFIED: _ClassVar[ColorOrder]
    COLOR_ORDER_RGB: _ClassVar[ColorOrder]
    COLOR_ORDER_BGR: _ClassVar[ColorOrder]
    COLOR_ORDER_GRAY: _ClassVar[ColorOrder]
    COLOR_ORDER_RGBA: _ClassVar[ColorOrder]
    COLOR_ORDER_BGRA: _ClassVar[ColorOrder]

class Verdict(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VERDICT_UNSPECIFIED: _ClassVar[Verdict]
    VERDICT_REAL: _ClassVar[Verdict]
    VERDICT_FAKE: _ClassVar[Verdict]
    VERDICT_NO_FACE: _ClassVar[Verdict]
    VERDICT_ERROR: _ClassVar[Verdict]
    VERDICT_UNCERTAIN: _ClassVar[Verdict]
COLOR_ORDER_UNSPECIFIED: ColorOrder
COLOR_ORDER_RGB: ColorOrder
COLOR_ORDER_BGR: ColorOrder
COLOR_ORDER_GRAY: ColorOrder
COLOR_ORDER_RGBA: ColorOrder
COLOR_ORDER_BGRA: ColorOrder
VERDICT_UNSPECIFIED: Verdict
VERDICT_REAL: Verdict
VERDICT_FAKE: Verdict
VERDICT_NO_FACE: Verdict
VERDICT_ERROR: Verdict
VERDICT_UNCERTAIN: Verdict

class RawImage(_message.Message):
    __slots__ = ("height", "width", "channels", "color_order", "pixels")
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    COLOR_ORDER_FIELD_NUMBER: _ClassVar[int]
    PIXELS_FIELD_NUMBER: _ClassVar[int]
    height: int
    width: int
    channels: int
    color_order: ColorOrder
    pixels: bytes
    def __init__(self, height: _Optional[int] = ..., width: _Optional[int] = ..., channels: _Optional[int] = ..., color_order: _Optional[_Union[ColorOrder, str]] = ..., pixels: _Optional[bytes] = ...) -> None: ...

class Frame(_message.Message):
    __slots__ = ("raw", "encoded", "index", "time", "live", "rescore_rate")
    RAW_FIELD_NUMBER: _ClassVar[int]
    ENCODED_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    LIVE_FIELD_NUMBER: _ClassVar[int]
    RESCORE_RATE_FIELD_NUMBER: _ClassVar[int]
    raw: RawImage
    encoded: bytes
    index: int
    time: float
    live: bool
    rescore_rate: float
    def __init__(self, raw: _Optional[_Union[RawImage, _Mapping]] = ..., encoded: _Optional[bytes] = ..., index: _Optional[int] = ..., time: _Optional[float] = ..., live: _Optional[bool] = ..., rescore_rate: _Optional[float] = ...) -> None: ...

class Image(_message.Message):
    __slots__ = ("raw", "encoded", "name")
    RAW_FIELD_NUMBER: _ClassVar[int]
    ENCODED_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    raw: RawImage
    encoded: bytes
    name: str
    def __init__(self, raw: _Optional[_Union[RawImage, _Mapping]] = ..., encoded: _Optional[bytes] = ..., name: _Optional[str] = ...) -> None: ...

class Box(_message.Message):
    __slots__ = ("x1", "y1", "x2", "y2")
    X1_FIELD_NUMBER: _ClassVar[int]
    Y1_FIELD_NUMBER: _ClassVar[int]
    X2_FIELD_NUMBER: _ClassVar[int]
    Y2_FIELD_NUMBER: _ClassVar[int]
    x1: float
    y1: float
    x2: float
    y2: float
    def __init__(self, x1: _Optional[float] = ..., y1: _Optional[float] = ..., x2: _Optional[float] = ..., y2: _Optional[float] = ...) -> None: ...

class Point(_message.Message):
    __slots__ = ("x", "y")
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    x: float
    y: float
    def __init__(self, x: _Optional[float] = ..., y: _Optional[float] = ...) -> None: ...

class Face(_message.Message):
    __slots__ = ("box", "det_score", "keypoints", "score", "member_scores", "frame", "time", "person", "age")
    BOX_FIELD_NUMBER: _ClassVar[int]
    DET_SCORE_FIELD_NUMBER: _ClassVar[int]
    KEYPOINTS_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    MEMBER_SCORES_FIELD_NUMBER: _ClassVar[int]
    FRAME_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    PERSON_FIELD_NUMBER: _ClassVar[int]
    AGE_FIELD_NUMBER: _ClassVar[int]
    box: Box
    det_score: float
    keypoints: _containers.RepeatedCompositeFieldContainer[Point]
    score: float
    member_scores: _containers.RepeatedScalarFieldContainer[float]
    frame: int
    time: float
    person: int
    age: int
    def __init__(self, box: _Optional[_Union[Box, _Mapping]] = ..., det_score: _Optional[float] = ..., keypoints: _Optional[_Iterable[_Union[Point, _Mapping]]] = ..., score: _Optional[float] = ..., member_scores: _Optional[_Iterable[float]] = ..., frame: _Optional[int] = ..., time: _Optional[float] = ..., person: _Optional[int] = ..., age: _Optional[int] = ...) -> None: ...

class Person(_message.Message):
    __slots__ = ("id", "score", "n_faces", "first_frame", "last_frame", "verdict")
    ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    N_FACES_FIELD_NUMBER: _ClassVar[int]
    FIRST_FRAME_FIELD_NUMBER: _ClassVar[int]
    LAST_FRAME_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    id: int
    score: float
    n_faces: int
    first_frame: int
    last_frame: int
    verdict: Verdict
    def __init__(self, id: _Optional[int] = ..., score: _Optional[float] = ..., n_faces: _Optional[int] = ..., first_frame: _Optional[int] = ..., last_frame: _Optional[int] = ..., verdict: _Optional[_Union[Verdict, str]] = ...) -> None: ...

class FrameScore(_message.Message):
    __slots__ = ("index", "time", "score", "n_faces")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    N_FACES_FIELD_NUMBER: _ClassVar[int]
    index: int
    time: float
    score: float
    n_faces: int
    def __init__(self, index: _Optional[int] = ..., time: _Optional[float] = ..., score: _Optional[float] = ..., n_faces: _Optional[int] = ...) -> None: ...

class FrameResult(_message.Message):
    __slots__ = ("index", "time", "faces", "score", "running_verdict", "running_score", "frames_done", "summary", "skipped")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    FACES_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    RUNNING_VERDICT_FIELD_NUMBER: _ClassVar[int]
    RUNNING_SCORE_FIELD_NUMBER: _ClassVar[int]
    FRAMES_DONE_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FIELD_NUMBER: _ClassVar[int]
    index: int
    time: float
    faces: _containers.RepeatedCompositeFieldContainer[Face]
    score: float
    running_verdict: Verdict
    running_score: float
    frames_done: int
    summary: StreamSummary
    skipped: bool
    def __init__(self, index: _Optional[int] = ..., time: _Optional[float] = ..., faces: _Optional[_Iterable[_Union[Face, _Mapping]]] = ..., score: _Optional[float] = ..., running_verdict: _Optional[_Union[Verdict, str]] = ..., running_score: _Optional[float] = ..., frames_done: _Optional[int] = ..., summary: _Optional[_Union[StreamSummary, _Mapping]] = ..., skipped: _Optional[bool] = ...) -> None: ...

class StreamSummary(_message.Message):
    __slots__ = ("verdict", "score", "frames", "frames_with_faces", "faces", "model", "threshold", "persons", "frames_skipped")
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    FRAMES_WITH_FACES_FIELD_NUMBER: _ClassVar[int]
    FACES_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    PERSONS_FIELD_NUMBER: _ClassVar[int]
    FRAMES_SKIPPED_FIELD_NUMBER: _ClassVar[int]
    verdict: Verdict
    score: float
    frames: int
    frames_with_faces: int
    faces: int
    model: str
    threshold: float
    persons: _containers.RepeatedCompositeFieldContainer[Person]
    frames_skipped: int
    def __init__(self, verdict: _Optional[_Union[Verdict, str]] = ..., score: _Optional[float] = ..., frames: _Optional[int] = ..., frames_with_faces: _Optional[int] = ..., faces: _Optional[int] = ..., model: _Optional[str] = ..., threshold: _Optional[float] = ..., persons: _Optional[_Iterable[_Union[Person, _Mapping]]] = ..., frames_skipped: _Optional[int] = ...) -> None: ...

class AnalysisResult(_message.Message):
    __slots__ = ("name", "kind", "verdict", "score", "faces", "frames", "model", "threshold", "frames_sampled", "persons")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    FACES_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    FRAMES_SAMPLED_FIELD_NUMBER: _ClassVar[int]
    PERSONS_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: str
    verdict: Verdict
    score: float
    faces: _containers.RepeatedCompositeFieldContainer[Face]
    frames: _containers.RepeatedCompositeFieldContainer[FrameScore]
    model: str
    threshold: float
    frames_sampled: int
    persons: _containers.RepeatedCompositeFieldContainer[Person]
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[str] = ..., verdict: _Optional[_Union[Verdict, str]] = ..., score: _Optional[float] = ..., faces: _Optional[_Iterable[_Union[Face, _Mapping]]] = ..., frames: _Optional[_Iterable[_Union[FrameScore, _Mapping]]] = ..., model: _Optional[str] = ..., threshold: _Optional[float] = ..., frames_sampled: _Optional[int] = ..., persons: _Optional[_Iterable[_Union[Person, _Mapping]]] = ...) -> None: ...

class VideoOptions(_message.Message):
    __slots__ = ("name", "fps", "every_frame", "max_frames", "total_bytes")
    NAME_FIELD_NUMBER: _ClassVar[int]
    FPS_FIELD_NUMBER: _ClassVar[int]
    EVERY_FRAME_FIELD_NUMBER: _ClassVar[int]
    MAX_FRAMES_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    name: str
    fps: float
    every_frame: bool
    max_frames: int
    total_bytes: int
    def __init__(self, name: _Optional[str] = ..., fps: _Optional[float] = ..., every_frame: _Optional[bool] = ..., max_frames: _Optional[int] = ..., total_bytes: _Optional[int] = ...) -> None: ...

class VideoChunk(_message.Message):
    __slots__ = ("options", "data")
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    options: VideoOptions
    data: bytes
    def __init__(self, options: _Optional[_Union[VideoOptions, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...

class Progress(_message.Message):
    __slots__ = ("bytes_received", "frames_done")
    BYTES_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    FRAMES_DONE_FIELD_NUMBER: _ClassVar[int]
    bytes_received: int
    frames_done: int
    def __init__(self, bytes_received: _Optional[int] = ..., frames_done: _Optional[int] = ...) -> None: ...

class VideoUpdate(_message.Message):
    __slots__ = ("progress", "result")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    progress: Progress
    result: AnalysisResult
    def __init__(self, progress: _Optional[_Union[Progress, _Mapping]] = ..., result: _Optional[_Union[AnalysisResult, _Mapping]] = ...) -> None: ...

class FaceBatch(_message.Message):
    __slots__ = ("crops",)
    CROPS_FIELD_NUMBER: _ClassVar[int]
    crops: _containers.RepeatedCompositeFieldContainer[Image]
    def __init__(self, crops: _Optional[_Iterable[_Union[Image, _Mapping]]] = ...) -> None: ...

class FaceScore(_message.Message):
    __slots__ = ("score", "member_scores", "verdict")
    SCORE_FIELD_NUMBER: _ClassVar[int]
    MEMBER_SCORES_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    score: float
    member_scores: _containers.RepeatedScalarFieldContainer[float]
    verdict: Verdict
    def __init__(self, score: _Optional[float] = ..., member_scores: _Optional[_Iterable[float]] = ..., verdict: _Optional[_Union[Verdict, str]] = ...) -> None: ...

class FaceScores(_message.Message):
    __slots__ = ("faces", "model", "threshold")
    FACES_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    faces: _containers.RepeatedCompositeFieldContainer[FaceScore]
    model: str
    threshold: float
    def __init__(self, faces: _Optional[_Iterable[_Union[FaceScore, _Mapping]]] = ..., model: _Optional[str] = ..., threshold: _Optional[float] = ...) -> None: ...

class ModelInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Limits(_message.Message):
    __slots__ = ("max_message_bytes", "max_frame_pixels", "max_video_bytes", "max_video_seconds", "max_faces_per_batch", "stream_window", "max_streams", "stream_max_bytes", "max_queued_bytes", "live_window")
    MAX_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_FRAME_PIXELS_FIELD_NUMBER: _ClassVar[int]
    MAX_VIDEO_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_VIDEO_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MAX_FACES_PER_BATCH_FIELD_NUMBER: _ClassVar[int]
    STREAM_WINDOW_FIELD_NUMBER: _ClassVar[int]
    MAX_STREAMS_FIELD_NUMBER: _ClassVar[int]
    STREAM_MAX_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_QUEUED_BYTES_FIELD_NUMBER: _ClassVar[int]
    LIVE_WINDOW_FIELD_NUMBER: _ClassVar[int]
    max_message_bytes: int
    max_frame_pixels: int
    max_video_bytes: int
    max_video_seconds: float
    max_faces_per_batch: int
    stream_window: int
    max_streams: int
    stream_max_bytes: int
    max_queued_bytes: int
    live_window: int
    def __init__(self, max_message_bytes: _Optional[int] = ..., max_frame_pixels: _Optional[int] = ..., max_video_bytes: _Optional[int] = ..., max_video_seconds: _Optional[float] = ..., max_faces_per_batch: _Optional[int] = ..., stream_window: _Optional[int] = ..., max_streams: _Optional[int] = ..., stream_max_bytes: _Optional[int] = ..., max_queued_bytes: _Optional[int] = ..., live_window: _Optional[int] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("model", "input_size", "threshold", "detector", "provider", "metadata_json", "limits", "server_version", "uncertain_low", "uncertain_high")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    INPUT_SIZE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    DETECTOR_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    METADATA_JSON_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    SERVER_VERSION_FIELD_NUMBER: _ClassVar[int]
    UNCERTAIN_LOW_FIELD_NUMBER: _ClassVar[int]
    UNCERTAIN_HIGH_FIELD_NUMBER: _ClassVar[int]
    model: str
    input_size: int
    threshold: float
    detector: str
    provider: str
    metadata_json: str
    limits: Limits
    server_version: str
    uncertain_low: float
    uncertain_high: float
    def __init__(self, model: _Optional[str] = ..., input_size: _Optional[int] = ..., threshold: _Optional[float] = ..., detector: _Optional[str] = ..., provider: _Optional[str] = ..., metadata_json: _Optional[str] = ..., limits: _Optional[_Union[Limits, _Mapping]] = ..., server_version: _Optional[str] = ..., uncertain_low: _Optional[float] = ..., uncertain_high: _Optional[float] = ...) -> None: ...
