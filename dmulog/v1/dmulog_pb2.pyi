from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class InstanceState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INSTANCE_STATE_UNSPECIFIED: _ClassVar[InstanceState]
    INSTANCE_STATE_CONSTRUCTED: _ClassVar[InstanceState]
    INSTANCE_STATE_RESUMED: _ClassVar[InstanceState]
    INSTANCE_STATE_PRESUSPENDED: _ClassVar[InstanceState]
    INSTANCE_STATE_SUSPENDED: _ClassVar[InstanceState]

class LogEventKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LOG_EVENT_KIND_UNSPECIFIED: _ClassVar[LogEventKind]
    LOG_EVENT_KIND_READY: _ClassVar[LogEventKind]
    LOG_EVENT_KIND_NODE_EXPIRED: _ClassVar[LogEventKind]

class LeaseState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LEASE_STATE_UNSPECIFIED: _ClassVar[LeaseState]
    LEASE_STATE_LIVE: _ClassVar[LeaseState]
    LEASE_STATE_EXPIRING: _ClassVar[LeaseState]
    LEASE_STATE_DEAD: _ClassVar[LeaseState]
INSTANCE_STATE_UNSPECIFIED: InstanceState
INSTANCE_STATE_CONSTRUCTED: InstanceState
INSTANCE_STATE_RESUMED: InstanceState
INSTANCE_STATE_PRESUSPENDED: InstanceState
INSTANCE_STATE_SUSPENDED: InstanceState
LOG_EVENT_KIND_UNSPECIFIED: LogEventKind
LOG_EVENT_KIND_READY: LogEventKind
LOG_EVENT_KIND_NODE_EXPIRED: LogEventKind
LEASE_STATE_UNSPECIFIED: LeaseState
LEASE_STATE_LIVE: LeaseState
LEASE_STATE_EXPIRING: LeaseState
LEASE_STATE_DEAD: LeaseState

class LogRef(_message.Message):
    __slots__ = ("uuid", "luid", "generation")
    UUID_FIELD_NUMBER: _ClassVar[int]
    LUID_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    uuid: str
    luid: int
    generation: int
    def __init__(self, uuid: _Optional[str] = ..., luid: _Optional[int] = ..., generation: _Optional[int] = ...) -> None: ...

class Node(_message.Message):
    __slots__ = ("name", "boot_id", "epoch")
    NAME_FIELD_NUMBER: _ClassVar[int]
    BOOT_ID_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    name: str
    boot_id: str
    epoch: int
    def __init__(self, name: _Optional[str] = ..., boot_id: _Optional[str] = ..., epoch: _Optional[int] = ...) -> None: ...

class CtrRequest(_message.Message):
    __slots__ = ("log", "node", "target_sectors", "log_type", "args", "block_devices")
    class BlockDevicesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    LOG_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    TARGET_SECTORS_FIELD_NUMBER: _ClassVar[int]
    LOG_TYPE_FIELD_NUMBER: _ClassVar[int]
    ARGS_FIELD_NUMBER: _ClassVar[int]
    BLOCK_DEVICES_FIELD_NUMBER: _ClassVar[int]
    log: LogRef
    node: Node
    target_sectors: int
    log_type: str
    args: _containers.RepeatedScalarFieldContainer[str]
    block_devices: _containers.ScalarMap[str, str]
    def __init__(self, log: _Optional[_Union[LogRef, _Mapping]] = ..., node: _Optional[_Union[Node, _Mapping]] = ..., target_sectors: _Optional[int] = ..., log_type: _Optional[str] = ..., args: _Optional[_Iterable[str]] = ..., block_devices: _Optional[_Mapping[str, str]] = ...) -> None: ...

class CtrResponse(_message.Message):
    __slots__ = ("device", "generation")
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    device: str
    generation: int
    def __init__(self, device: _Optional[str] = ..., generation: _Optional[int] = ...) -> None: ...

class DtrRequest(_message.Message):
    __slots__ = ("log", "node")
    LOG_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    log: LogRef
    node: Node
    def __init__(self, log: _Optional[_Union[LogRef, _Mapping]] = ..., node: _Optional[_Union[Node, _Mapping]] = ...) -> None: ...

class DtrResponse(_message.Message):
    __slots__ = ("generation",)
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    generation: int
    def __init__(self, generation: _Optional[int] = ...) -> None: ...

class PresuspendRequest(_message.Message):
    __slots__ = ("log", "node")
    LOG_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    log: LogRef
    node: Node
    def __init__(self, log: _Optional[_Union[LogRef, _Mapping]] = ..., node: _Optional[_Union[Node, _Mapping]] = ...) -> None: ...

class PresuspendResponse(_message.Message):
    __slots__ = ("generation",)
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    generation: int
    def __init__(self, generation: _Optional[int] = ...) -> None: ...

class PostsuspendRequest(_message.Message):
    __slots__ = ("log", "node")
    LOG_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    log: LogRef
    node: Node
    def __init__(self, log: _Optional[_Union[LogRef, _Mapping]] = ..., node: _Optional[_Union[Node, _Mapping]] = ...) -> None: ...

class PostsuspendResponse(_message.Message):
    __slots__ = ("generation",)
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    generation: int
    def __init__(self, generation: _Optional[int] = ...) -> None: ...

class ResumeRequest(_message.Message):
    __slots__ = ("log", "node")
    LOG_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    log: LogRef
    node: Node
    def __init__(self, log: _Optional[_Union[LogRef, _Mapping]] = ..., node: _Optional[_Union[Node, _Mapping]] = ...) -> None: ...

class ResumeResponse(_message.Message):
    __slots__ = ("generation",)
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    generation: int
    def __init__(self, generation: _Optional[int] = ...) -> None: ...

class GetRegionSizeRequest(_message.Message):
    __slots__ = ("log", "node")
    LOG_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    log: LogRef
    node: Node
    def __init__(self, log: _Optional[_Union[LogRef, _Mapping]] = ..., node: _Optional[_Union[Node, _Mapping]] = ...) -> None: ...

class GetRegionSizeResponse(_message.Message):
    __slots__ = ("region_size", "generation")
    REGION_SIZE_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    region_size: int
    generation: int
    def __init__(self, region_size: _Optional[int] = ..., generation: _Optional[int] = ...) -> None: ...

class IsCleanRequest(_message.Message):
    __slots__ = ("log", "node", "region")
    LOG_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    log: LogRef
    node: Node
    region: int
    def __init__(self, log: _Optional[_Union[LogRef, _Mapping]] = ..., node: _Optional[_Union[Node, _Mapping]] = ..., region: _Optional[int] = ...) -> None: ...

class IsCleanResponse(_message.Message):
    __slots__ = ("clean", "generation")
    CLEAN_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    clean: bool
    generation: int
    def __init__(self, clean: _Optional[bool] = ..., generation: _Optional[int] = ...) -> None: ...

class InSyncRequest(_message.Message):
    __slots__ = ("log", "node", "region")
    LOG_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    log: LogRef
    node: Node
    region: int
    def __init__(self, log: _Optional[_Union[LogRef, _Mapping]] = ..., node: _Optional[_Union[Node, _Mapping]] = ..., region: _Optional[int] = ...) -> None: ...

class InSyncResponse(_message.Message):
    __slots__ = ("in_sync", "latched", "generation")
    IN_SYNC_FIELD_NUMBER: _ClassVar[int]
    LATCHED_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    in_sync: bool
    latched: bool
    generation: int
    def __init__(self, in_sync: _Optional[bool] = ..., latched: _Optional[bool] = ..., generation: _Optional[int] = ...) -> None: ...

class FlushRequest(_message.Message):
    __slots__ = ("log", "node", "mark_regions")
    LOG_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    MARK_REGIONS_FIELD_NUMBER: _ClassVar[int]
    log: LogRef
    node: Node
    mark_regions: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, log: _Optional[_Union[LogRef, _Mapping]] = ..., node: _Optional[_Union[Node, _Mapping]] = ..., mark_regions: _Optional[_Iterable[int]] = ...) -> None: ...

class FlushResponse(_message.Message):
    __slots__ = ("generation",)
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    generation: int
    def __init__(self, generation: _Optional[int] = ...) -> None: ...

class MarkRegionRequest(_message.Message):
    __slots__ = ("log", "node", "regions")
    LOG_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    REGIONS_FIELD_NUMBER: _ClassVar[int]
    log: LogRef
    node: Node
    regions: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, log: _Optional[_Union[LogRef, _Mapping]] = ..., node: _Optional[_Union[Node, _Mapping]] = ..., regions: _Optional[_Iterable[int]] = ...) -> None: ...

class MarkRegionResponse(_message.Message):
    __slots__ = ("generation",)
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    generation: int
    def __init__(self, generation: _Optional[int] = ...) -> None: ...

class ClearRegionRequest(_message.Message):
    __slots__ = ("log", "node", "regions")
    LOG_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    REGIONS_FIELD_NUMBER: _ClassVar[int]
    log: LogRef
    node: Node
    regions: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, log: _Optional[_Union[LogRef, _Mapping]] = ..., node: _Optional[_Union[Node, _Mapping]] = ..., regions: _Optional[_Iterable[int]] = ...) -> None: ...

class ClearRegionResponse(_message.Message):
    __slots__ = ("generation",)
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    generation: int
    def __init__(self, generation: _Optional[int] = ...) -> None: ...

class GetResyncWorkRequest(_message.Message):
    __slots__ = ("log", "node")
    LOG_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    log: LogRef
    node: Node
    def __init__(self, log: _Optional[_Union[LogRef, _Mapping]] = ..., node: _Optional[_Union[Node, _Mapping]] = ...) -> None: ...

class GetResyncWorkResponse(_message.Message):
    __slots__ = ("has_work", "region", "generation")
    HAS_WORK_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    has_work: bool
    region: int
    generation: int
    def __init__(self, has_work: _Optional[bool] = ..., region: _Optional[int] = ..., generation: _Optional[int] = ...) -> None: ...

class SetRegionSyncRequest(_message.Message):
    __slots__ = ("log", "node", "region", "in_sync")
    LOG_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    IN_SYNC_FIELD_NUMBER: _ClassVar[int]
    log: LogRef
    node: Node
    region: int
    in_sync: bool
    def __init__(self, log: _Optional[_Union[LogRef, _Mapping]] = ..., node: _Optional[_Union[Node, _Mapping]] = ..., region: _Optional[int] = ..., in_sync: _Optional[bool] = ...) -> None: ...

class SetRegionSyncResponse(_message.Message):
    __slots__ = ("generation",)
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    generation: int
    def __init__(self, generation: _Optional[int] = ...) -> None: ...

class GetSyncCountRequest(_message.Message):
    __slots__ = ("log", "node")
    LOG_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    log: LogRef
    node: Node
    def __init__(self, log: _Optional[_Union[LogRef, _Mapping]] = ..., node: _Optional[_Union[Node, _Mapping]] = ...) -> None: ...

class GetSyncCountResponse(_message.Message):
    __slots__ = ("sync_count", "generation")
    SYNC_COUNT_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    sync_count: int
    generation: int
    def __init__(self, sync_count: _Optional[int] = ..., generation: _Optional[int] = ...) -> None: ...

class StatusInfoRequest(_message.Message):
    __slots__ = ("log", "node")
    LOG_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    log: LogRef
    node: Node
    def __init__(self, log: _Optional[_Union[LogRef, _Mapping]] = ..., node: _Optional[_Union[Node, _Mapping]] = ...) -> None: ...

class StatusInfoResponse(_message.Message):
    __slots__ = ("text", "generation")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    text: str
    generation: int
    def __init__(self, text: _Optional[str] = ..., generation: _Optional[int] = ...) -> None: ...

class StatusTableRequest(_message.Message):
    __slots__ = ("log", "node")
    LOG_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    log: LogRef
    node: Node
    def __init__(self, log: _Optional[_Union[LogRef, _Mapping]] = ..., node: _Optional[_Union[Node, _Mapping]] = ...) -> None: ...

class StatusTableResponse(_message.Message):
    __slots__ = ("text", "generation")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    text: str
    generation: int
    def __init__(self, text: _Optional[str] = ..., generation: _Optional[int] = ...) -> None: ...

class IsRemoteRecoveringRequest(_message.Message):
    __slots__ = ("log", "node", "region")
    LOG_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    log: LogRef
    node: Node
    region: int
    def __init__(self, log: _Optional[_Union[LogRef, _Mapping]] = ..., node: _Optional[_Union[Node, _Mapping]] = ..., region: _Optional[int] = ...) -> None: ...

class IsRemoteRecoveringResponse(_message.Message):
    __slots__ = ("is_recovering", "in_sync_hint", "generation")
    IS_RECOVERING_FIELD_NUMBER: _ClassVar[int]
    IN_SYNC_HINT_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    is_recovering: bool
    in_sync_hint: int
    generation: int
    def __init__(self, is_recovering: _Optional[bool] = ..., in_sync_hint: _Optional[int] = ..., generation: _Optional[int] = ...) -> None: ...

class ExchangeRequest(_message.Message):
    __slots__ = ("calls",)
    CALLS_FIELD_NUMBER: _ClassVar[int]
    calls: _containers.RepeatedCompositeFieldContainer[ExchangeCall]
    def __init__(self, calls: _Optional[_Iterable[_Union[ExchangeCall, _Mapping]]] = ...) -> None: ...

class ExchangeCall(_message.Message):
    __slots__ = ("id", "timeout_ms", "ctr", "dtr", "presuspend", "postsuspend", "resume", "get_region_size", "is_clean", "in_sync", "flush", "mark_region", "clear_region", "get_resync_work", "set_region_sync", "get_sync_count", "status_info", "status_table", "is_remote_recovering")
    ID_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    CTR_FIELD_NUMBER: _ClassVar[int]
    DTR_FIELD_NUMBER: _ClassVar[int]
    PRESUSPEND_FIELD_NUMBER: _ClassVar[int]
    POSTSUSPEND_FIELD_NUMBER: _ClassVar[int]
    RESUME_FIELD_NUMBER: _ClassVar[int]
    GET_REGION_SIZE_FIELD_NUMBER: _ClassVar[int]
    IS_CLEAN_FIELD_NUMBER: _ClassVar[int]
    IN_SYNC_FIELD_NUMBER: _ClassVar[int]
    FLUSH_FIELD_NUMBER: _ClassVar[int]
    MARK_REGION_FIELD_NUMBER: _ClassVar[int]
    CLEAR_REGION_FIELD_NUMBER: _ClassVar[int]
    GET_RESYNC_WORK_FIELD_NUMBER: _ClassVar[int]
    SET_REGION_SYNC_FIELD_NUMBER: _ClassVar[int]
    GET_SYNC_COUNT_FIELD_NUMBER: _ClassVar[int]
    STATUS_INFO_FIELD_NUMBER: _ClassVar[int]
    STATUS_TABLE_FIELD_NUMBER: _ClassVar[int]
    IS_REMOTE_RECOVERING_FIELD_NUMBER: _ClassVar[int]
    id: int
    timeout_ms: int
    ctr: CtrRequest
    dtr: DtrRequest
    presuspend: PresuspendRequest
    postsuspend: PostsuspendRequest
    resume: ResumeRequest
    get_region_size: GetRegionSizeRequest
    is_clean: IsCleanRequest
    in_sync: InSyncRequest
    flush: FlushRequest
    mark_region: MarkRegionRequest
    clear_region: ClearRegionRequest
    get_resync_work: GetResyncWorkRequest
    set_region_sync: SetRegionSyncRequest
    get_sync_count: GetSyncCountRequest
    status_info: StatusInfoRequest
    status_table: StatusTableRequest
    is_remote_recovering: IsRemoteRecoveringRequest
    def __init__(self, id: _Optional[int] = ..., timeout_ms: _Optional[int] = ..., ctr: _Optional[_Union[CtrRequest, _Mapping]] = ..., dtr: _Optional[_Union[DtrRequest, _Mapping]] = ..., presuspend: _Optional[_Union[PresuspendRequest, _Mapping]] = ..., postsuspend: _Optional[_Union[PostsuspendRequest, _Mapping]] = ..., resume: _Optional[_Union[ResumeRequest, _Mapping]] = ..., get_region_size: _Optional[_Union[GetRegionSizeRequest, _Mapping]] = ..., is_clean: _Optional[_Union[IsCleanRequest, _Mapping]] = ..., in_sync: _Optional[_Union[InSyncRequest, _Mapping]] = ..., flush: _Optional[_Union[FlushRequest, _Mapping]] = ..., mark_region: _Optional[_Union[MarkRegionRequest, _Mapping]] = ..., clear_region: _Optional[_Union[ClearRegionRequest, _Mapping]] = ..., get_resync_work: _Optional[_Union[GetResyncWorkRequest, _Mapping]] = ..., set_region_sync: _Optional[_Union[SetRegionSyncRequest, _Mapping]] = ..., get_sync_count: _Optional[_Union[GetSyncCountRequest, _Mapping]] = ..., status_info: _Optional[_Union[StatusInfoRequest, _Mapping]] = ..., status_table: _Optional[_Union[StatusTableRequest, _Mapping]] = ..., is_remote_recovering: _Optional[_Union[IsRemoteRecoveringRequest, _Mapping]] = ...) -> None: ...

class ExchangeResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[ExchangeResult]
    def __init__(self, results: _Optional[_Iterable[_Union[ExchangeResult, _Mapping]]] = ...) -> None: ...

class ExchangeResult(_message.Message):
    __slots__ = ("id", "code", "message", "ctr", "dtr", "presuspend", "postsuspend", "resume", "get_region_size", "is_clean", "in_sync", "flush", "mark_region", "clear_region", "get_resync_work", "set_region_sync", "get_sync_count", "status_info", "status_table", "is_remote_recovering")
    ID_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CTR_FIELD_NUMBER: _ClassVar[int]
    DTR_FIELD_NUMBER: _ClassVar[int]
    PRESUSPEND_FIELD_NUMBER: _ClassVar[int]
    POSTSUSPEND_FIELD_NUMBER: _ClassVar[int]
    RESUME_FIELD_NUMBER: _ClassVar[int]
    GET_REGION_SIZE_FIELD_NUMBER: _ClassVar[int]
    IS_CLEAN_FIELD_NUMBER: _ClassVar[int]
    IN_SYNC_FIELD_NUMBER: _ClassVar[int]
    FLUSH_FIELD_NUMBER: _ClassVar[int]
    MARK_REGION_FIELD_NUMBER: _ClassVar[int]
    CLEAR_REGION_FIELD_NUMBER: _ClassVar[int]
    GET_RESYNC_WORK_FIELD_NUMBER: _ClassVar[int]
    SET_REGION_SYNC_FIELD_NUMBER: _ClassVar[int]
    GET_SYNC_COUNT_FIELD_NUMBER: _ClassVar[int]
    STATUS_INFO_FIELD_NUMBER: _ClassVar[int]
    STATUS_TABLE_FIELD_NUMBER: _ClassVar[int]
    IS_REMOTE_RECOVERING_FIELD_NUMBER: _ClassVar[int]
    id: int
    code: int
    message: str
    ctr: CtrResponse
    dtr: DtrResponse
    presuspend: PresuspendResponse
    postsuspend: PostsuspendResponse
    resume: ResumeResponse
    get_region_size: GetRegionSizeResponse
    is_clean: IsCleanResponse
    in_sync: InSyncResponse
    flush: FlushResponse
    mark_region: MarkRegionResponse
    clear_region: ClearRegionResponse
    get_resync_work: GetResyncWorkResponse
    set_region_sync: SetRegionSyncResponse
    get_sync_count: GetSyncCountResponse
    status_info: StatusInfoResponse
    status_table: StatusTableResponse
    is_remote_recovering: IsRemoteRecoveringResponse
    def __init__(self, id: _Optional[int] = ..., code: _Optional[int] = ..., message: _Optional[str] = ..., ctr: _Optional[_Union[CtrResponse, _Mapping]] = ..., dtr: _Optional[_Union[DtrResponse, _Mapping]] = ..., presuspend: _Optional[_Union[PresuspendResponse, _Mapping]] = ..., postsuspend: _Optional[_Union[PostsuspendResponse, _Mapping]] = ..., resume: _Optional[_Union[ResumeResponse, _Mapping]] = ..., get_region_size: _Optional[_Union[GetRegionSizeResponse, _Mapping]] = ..., is_clean: _Optional[_Union[IsCleanResponse, _Mapping]] = ..., in_sync: _Optional[_Union[InSyncResponse, _Mapping]] = ..., flush: _Optional[_Union[FlushResponse, _Mapping]] = ..., mark_region: _Optional[_Union[MarkRegionResponse, _Mapping]] = ..., clear_region: _Optional[_Union[ClearRegionResponse, _Mapping]] = ..., get_resync_work: _Optional[_Union[GetResyncWorkResponse, _Mapping]] = ..., set_region_sync: _Optional[_Union[SetRegionSyncResponse, _Mapping]] = ..., get_sync_count: _Optional[_Union[GetSyncCountResponse, _Mapping]] = ..., status_info: _Optional[_Union[StatusInfoResponse, _Mapping]] = ..., status_table: _Optional[_Union[StatusTableResponse, _Mapping]] = ..., is_remote_recovering: _Optional[_Union[IsRemoteRecoveringResponse, _Mapping]] = ...) -> None: ...

class ListLogsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListLogsResponse(_message.Message):
    __slots__ = ("logs",)
    LOGS_FIELD_NUMBER: _ClassVar[int]
    logs: _containers.RepeatedCompositeFieldContainer[LogSummary]
    def __init__(self, logs: _Optional[_Iterable[_Union[LogSummary, _Mapping]]] = ...) -> None: ...

class GetLogStateRequest(_message.Message):
    __slots__ = ("uuid",)
    UUID_FIELD_NUMBER: _ClassVar[int]
    uuid: str
    def __init__(self, uuid: _Optional[str] = ...) -> None: ...

class Instance(_message.Message):
    __slots__ = ("node", "boot_id", "luid", "state", "target_sectors", "region_count", "epoch")
    NODE_FIELD_NUMBER: _ClassVar[int]
    BOOT_ID_FIELD_NUMBER: _ClassVar[int]
    LUID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    TARGET_SECTORS_FIELD_NUMBER: _ClassVar[int]
    REGION_COUNT_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    node: str
    boot_id: str
    luid: int
    state: InstanceState
    target_sectors: int
    region_count: int
    epoch: int
    def __init__(self, node: _Optional[str] = ..., boot_id: _Optional[str] = ..., luid: _Optional[int] = ..., state: _Optional[_Union[InstanceState, str]] = ..., target_sectors: _Optional[int] = ..., region_count: _Optional[int] = ..., epoch: _Optional[int] = ...) -> None: ...

class LogSummary(_message.Message):
    __slots__ = ("uuid", "log_type", "region_size", "region_count", "sync_count", "dirty_count", "instance_count", "active_count", "problem")
    UUID_FIELD_NUMBER: _ClassVar[int]
    LOG_TYPE_FIELD_NUMBER: _ClassVar[int]
    REGION_SIZE_FIELD_NUMBER: _ClassVar[int]
    REGION_COUNT_FIELD_NUMBER: _ClassVar[int]
    SYNC_COUNT_FIELD_NUMBER: _ClassVar[int]
    DIRTY_COUNT_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_COUNT_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_COUNT_FIELD_NUMBER: _ClassVar[int]
    PROBLEM_FIELD_NUMBER: _ClassVar[int]
    uuid: str
    log_type: str
    region_size: int
    region_count: int
    sync_count: int
    dirty_count: int
    instance_count: int
    active_count: int
    problem: str
    def __init__(self, uuid: _Optional[str] = ..., log_type: _Optional[str] = ..., region_size: _Optional[int] = ..., region_count: _Optional[int] = ..., sync_count: _Optional[int] = ..., dirty_count: _Optional[int] = ..., instance_count: _Optional[int] = ..., active_count: _Optional[int] = ..., problem: _Optional[str] = ...) -> None: ...

class RegionMarks(_message.Message):
    __slots__ = ("region", "nodes")
    REGION_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    region: int
    nodes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, region: _Optional[int] = ..., nodes: _Optional[_Iterable[str]] = ...) -> None: ...

class GetLogStateResponse(_message.Message):
    __slots__ = ("summary", "in_sync_bitmap", "dirty_bitmap", "marks", "recovering", "recovering_region", "recoverer_node", "recoverer_luid", "sync_search", "priority_regions", "instances", "args", "fences")
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    IN_SYNC_BITMAP_FIELD_NUMBER: _ClassVar[int]
    DIRTY_BITMAP_FIELD_NUMBER: _ClassVar[int]
    MARKS_FIELD_NUMBER: _ClassVar[int]
    RECOVERING_FIELD_NUMBER: _ClassVar[int]
    RECOVERING_REGION_FIELD_NUMBER: _ClassVar[int]
    RECOVERER_NODE_FIELD_NUMBER: _ClassVar[int]
    RECOVERER_LUID_FIELD_NUMBER: _ClassVar[int]
    SYNC_SEARCH_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_REGIONS_FIELD_NUMBER: _ClassVar[int]
    INSTANCES_FIELD_NUMBER: _ClassVar[int]
    ARGS_FIELD_NUMBER: _ClassVar[int]
    FENCES_FIELD_NUMBER: _ClassVar[int]
    summary: LogSummary
    in_sync_bitmap: bytes
    dirty_bitmap: bytes
    marks: _containers.RepeatedCompositeFieldContainer[RegionMarks]
    recovering: bool
    recovering_region: int
    recoverer_node: str
    recoverer_luid: int
    sync_search: int
    priority_regions: _containers.RepeatedScalarFieldContainer[int]
    instances: _containers.RepeatedCompositeFieldContainer[Instance]
    args: _containers.RepeatedScalarFieldContainer[str]
    fences: _containers.RepeatedCompositeFieldContainer[NodeFence]
    def __init__(self, summary: _Optional[_Union[LogSummary, _Mapping]] = ..., in_sync_bitmap: _Optional[bytes] = ..., dirty_bitmap: _Optional[bytes] = ..., marks: _Optional[_Iterable[_Union[RegionMarks, _Mapping]]] = ..., recovering: _Optional[bool] = ..., recovering_region: _Optional[int] = ..., recoverer_node: _Optional[str] = ..., recoverer_luid: _Optional[int] = ..., sync_search: _Optional[int] = ..., priority_regions: _Optional[_Iterable[int]] = ..., instances: _Optional[_Iterable[_Union[Instance, _Mapping]]] = ..., args: _Optional[_Iterable[str]] = ..., fences: _Optional[_Iterable[_Union[NodeFence, _Mapping]]] = ...) -> None: ...

class NodeFence(_message.Message):
    __slots__ = ("node", "epoch")
    NODE_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    node: str
    epoch: int
    def __init__(self, node: _Optional[str] = ..., epoch: _Optional[int] = ...) -> None: ...

class ReadLogStateRequest(_message.Message):
    __slots__ = ("uuid",)
    UUID_FIELD_NUMBER: _ClassVar[int]
    uuid: str
    def __init__(self, uuid: _Optional[str] = ...) -> None: ...

class ReadLogStateResponse(_message.Message):
    __slots__ = ("head", "in_sync_bitmap", "dirty_bitmap", "marks")
    HEAD_FIELD_NUMBER: _ClassVar[int]
    IN_SYNC_BITMAP_FIELD_NUMBER: _ClassVar[int]
    DIRTY_BITMAP_FIELD_NUMBER: _ClassVar[int]
    MARKS_FIELD_NUMBER: _ClassVar[int]
    head: GetLogStateResponse
    in_sync_bitmap: BitmapChunk
    dirty_bitmap: BitmapChunk
    marks: RegionMarksPage
    def __init__(self, head: _Optional[_Union[GetLogStateResponse, _Mapping]] = ..., in_sync_bitmap: _Optional[_Union[BitmapChunk, _Mapping]] = ..., dirty_bitmap: _Optional[_Union[BitmapChunk, _Mapping]] = ..., marks: _Optional[_Union[RegionMarksPage, _Mapping]] = ...) -> None: ...

class BitmapChunk(_message.Message):
    __slots__ = ("offset", "data")
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    offset: int
    data: bytes
    def __init__(self, offset: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class RegionMarksPage(_message.Message):
    __slots__ = ("marks",)
    MARKS_FIELD_NUMBER: _ClassVar[int]
    marks: _containers.RepeatedCompositeFieldContainer[RegionMarks]
    def __init__(self, marks: _Optional[_Iterable[_Union[RegionMarks, _Mapping]]] = ...) -> None: ...

class AcquireLeaseRequest(_message.Message):
    __slots__ = ("node",)
    NODE_FIELD_NUMBER: _ClassVar[int]
    node: Node
    def __init__(self, node: _Optional[_Union[Node, _Mapping]] = ...) -> None: ...

class RenewLeaseRequest(_message.Message):
    __slots__ = ("node",)
    NODE_FIELD_NUMBER: _ClassVar[int]
    node: Node
    def __init__(self, node: _Optional[_Union[Node, _Mapping]] = ...) -> None: ...

class AcquireLeaseResponse(_message.Message):
    __slots__ = ("epoch", "ttl_ms")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    TTL_MS_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    ttl_ms: int
    def __init__(self, epoch: _Optional[int] = ..., ttl_ms: _Optional[int] = ...) -> None: ...

class RenewLeaseResponse(_message.Message):
    __slots__ = ("epoch", "ttl_ms")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    TTL_MS_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    ttl_ms: int
    def __init__(self, epoch: _Optional[int] = ..., ttl_ms: _Optional[int] = ...) -> None: ...

class WatchLogsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WatchLogsResponse(_message.Message):
    __slots__ = ("kind", "uuid", "node", "epoch")
    KIND_FIELD_NUMBER: _ClassVar[int]
    UUID_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    kind: LogEventKind
    uuid: str
    node: str
    epoch: int
    def __init__(self, kind: _Optional[_Union[LogEventKind, str]] = ..., uuid: _Optional[str] = ..., node: _Optional[str] = ..., epoch: _Optional[int] = ...) -> None: ...

class ListNodesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class NodeLease(_message.Message):
    __slots__ = ("name", "boot_id", "epoch", "state", "renewed_ms_ago", "expires_in_ms", "expiring_incarnations")
    NAME_FIELD_NUMBER: _ClassVar[int]
    BOOT_ID_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    RENEWED_MS_AGO_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_IN_MS_FIELD_NUMBER: _ClassVar[int]
    EXPIRING_INCARNATIONS_FIELD_NUMBER: _ClassVar[int]
    name: str
    boot_id: str
    epoch: int
    state: LeaseState
    renewed_ms_ago: int
    expires_in_ms: int
    expiring_incarnations: int
    def __init__(self, name: _Optional[str] = ..., boot_id: _Optional[str] = ..., epoch: _Optional[int] = ..., state: _Optional[_Union[LeaseState, str]] = ..., renewed_ms_ago: _Optional[int] = ..., expires_in_ms: _Optional[int] = ..., expiring_incarnations: _Optional[int] = ...) -> None: ...

class ListNodesResponse(_message.Message):
    __slots__ = ("nodes",)
    NODES_FIELD_NUMBER: _ClassVar[int]
    nodes: _containers.RepeatedCompositeFieldContainer[NodeLease]
    def __init__(self, nodes: _Optional[_Iterable[_Union[NodeLease, _Mapping]]] = ...) -> None: ...
