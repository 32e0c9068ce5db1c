//! Every architected number of virtio-gpu this crate uses, named once (virtio 1.2
//! §5.7), and the crate's own limits, each with the reason for its value.

/// The virtio device ID of a GPU device (virtio 1.2 §5).
pub const DEVICE_ID: u32 = 16;

/// Queue indices (§5.7.2).
pub mod queue {
    /// The control queue: every command but the cursor's.
    pub const CONTROLQ: u16 = 0;
    /// The cursor queue: UPDATE_CURSOR and MOVE_CURSOR.
    pub const CURSORQ: u16 = 1;
}

/// Feature bits (§5.7.3), as masks.
pub mod features {
    /// VIRTIO_GPU_F_VIRGL: 3D mode. Not offered.
    pub const VIRGL: u64 = 1 << 0;
    /// VIRTIO_GPU_F_EDID: GET_EDID is supported.
    pub const EDID: u64 = 1 << 1;
}

/// Device configuration layout (`struct virtio_gpu_config`, §5.7.4).
pub mod config {
    /// `events_read`: pending events (read-only to the driver).
    pub const EVENTS_READ: usize = 0;
    /// `events_clear`: the driver writes 1s to clear bits of `events_read`.
    pub const EVENTS_CLEAR: usize = 4;
    /// `num_scanouts`.
    pub const NUM_SCANOUTS: usize = 8;
    /// `num_capsets`.
    pub const NUM_CAPSETS: usize = 12;
    /// Bytes of configuration space.
    pub const SIZE: usize = 16;
    /// VIRTIO_GPU_EVENT_DISPLAY: the display configuration changed.
    pub const EVENT_DISPLAY: u32 = 1 << 0;
}

/// Command and response types (`enum virtio_gpu_ctrl_type`, §5.7.6.7).
pub mod cmd {
    pub const GET_DISPLAY_INFO: u32 = 0x0100;
    pub const RESOURCE_CREATE_2D: u32 = 0x0101;
    pub const RESOURCE_UNREF: u32 = 0x0102;
    pub const SET_SCANOUT: u32 = 0x0103;
    pub const RESOURCE_FLUSH: u32 = 0x0104;
    pub const TRANSFER_TO_HOST_2D: u32 = 0x0105;
    pub const RESOURCE_ATTACH_BACKING: u32 = 0x0106;
    pub const RESOURCE_DETACH_BACKING: u32 = 0x0107;
    pub const GET_CAPSET_INFO: u32 = 0x0108;
    pub const GET_CAPSET: u32 = 0x0109;
    pub const GET_EDID: u32 = 0x010a;

    pub const UPDATE_CURSOR: u32 = 0x0300;
    pub const MOVE_CURSOR: u32 = 0x0301;

    pub const RESP_OK_NODATA: u32 = 0x1100;
    pub const RESP_OK_DISPLAY_INFO: u32 = 0x1101;
    pub const RESP_OK_EDID: u32 = 0x1104;

    pub const RESP_ERR_UNSPEC: u32 = 0x1200;
    pub const RESP_ERR_OUT_OF_MEMORY: u32 = 0x1201;
    pub const RESP_ERR_INVALID_SCANOUT_ID: u32 = 0x1202;
    pub const RESP_ERR_INVALID_RESOURCE_ID: u32 = 0x1203;
    pub const RESP_ERR_INVALID_CONTEXT_ID: u32 = 0x1204;
    pub const RESP_ERR_INVALID_PARAMETER: u32 = 0x1205;
}

/// `struct virtio_gpu_ctrl_hdr` (§5.7.6.7).
pub mod hdr {
    /// Bytes of the header every request and response starts with.
    pub const SIZE: usize = 24;
    pub const TYPE: usize = 0;
    pub const FLAGS: usize = 4;
    pub const FENCE_ID: usize = 8;
    pub const CTX_ID: usize = 16;
    pub const RING_IDX: usize = 20;
    /// VIRTIO_GPU_FLAG_FENCE: the response is sent once the command completed, with
    /// the flag and the fence id echoed.
    pub const FLAG_FENCE: u32 = 1 << 0;
    /// VIRTIO_GPU_FLAG_INFO_RING_IDX: `ring_idx` is valid (context rings, 3D only).
    pub const FLAG_INFO_RING_IDX: u32 = 1 << 1;
}

/// Request and response sizes (header included) and the fields after the header
/// (§5.7.6.8). Offsets are from the start of the request.
pub mod layout {
    use super::hdr::SIZE as H;

    /// `struct virtio_gpu_rect`: x, y, width, height.
    pub const RECT: usize = 16;
    /// VIRTIO_GPU_MAX_SCANOUTS.
    pub const MAX_SCANOUTS: usize = 16;
    /// `struct virtio_gpu_display_one`: rect, enabled, flags.
    pub const DISPLAY_ONE: usize = RECT + 8;
    /// `struct virtio_gpu_resp_display_info`.
    pub const RESP_DISPLAY_INFO: usize = H + MAX_SCANOUTS * DISPLAY_ONE;

    /// `struct virtio_gpu_get_edid`: scanout, padding.
    pub const GET_EDID: usize = H + 8;
    /// Bytes of the `edid` array of the response.
    pub const EDID_BLOB: usize = 1024;
    /// `struct virtio_gpu_resp_edid`: size, padding, edid[1024].
    pub const RESP_EDID: usize = H + 8 + EDID_BLOB;

    /// `struct virtio_gpu_resource_create_2d`: resource_id, format, width, height.
    pub const RESOURCE_CREATE_2D: usize = H + 16;
    /// `struct virtio_gpu_resource_unref` / `_detach_backing`: resource_id, padding.
    pub const RESOURCE_ID_ONLY: usize = H + 8;
    /// `struct virtio_gpu_set_scanout`: rect, scanout_id, resource_id.
    pub const SET_SCANOUT: usize = H + RECT + 8;
    /// `struct virtio_gpu_resource_flush`: rect, resource_id, padding.
    pub const RESOURCE_FLUSH: usize = H + RECT + 8;
    /// `struct virtio_gpu_transfer_to_host_2d`: rect, offset (le64), resource_id,
    /// padding.
    pub const TRANSFER_TO_HOST_2D: usize = H + RECT + 16;
    /// `struct virtio_gpu_resource_attach_backing`: resource_id, nr_entries; the
    /// entries follow.
    pub const ATTACH_BACKING: usize = H + 8;
    /// `struct virtio_gpu_mem_entry`: addr (le64), length, padding.
    pub const MEM_ENTRY: usize = 16;
    /// `struct virtio_gpu_update_cursor`: pos (scanout_id, x, y, padding),
    /// resource_id, hot_x, hot_y, padding.
    pub const UPDATE_CURSOR: usize = H + 16 + 16;
    /// The largest fixed-size request (TRANSFER_TO_HOST_2D and the cursor's).
    pub const MAX_REQUEST: usize = TRANSFER_TO_HOST_2D;
    const _: () = assert!(UPDATE_CURSOR <= MAX_REQUEST && SET_SCANOUT <= MAX_REQUEST);
}

/// `enum virtio_gpu_formats` (§5.7.6.8), the 32-bit-per-pixel formats of 2D mode.
/// Names give the byte order in memory.
pub mod format {
    pub const B8G8R8A8_UNORM: u32 = 1;
    pub const B8G8R8X8_UNORM: u32 = 2;
    pub const A8R8G8B8_UNORM: u32 = 3;
    pub const X8R8G8B8_UNORM: u32 = 4;
    pub const R8G8B8A8_UNORM: u32 = 67;
    pub const X8B8G8R8_UNORM: u32 = 68;
    pub const A8B8G8R8_UNORM: u32 = 121;
    pub const R8G8B8X8_UNORM: u32 = 134;
    /// Bytes per pixel of every format above.
    pub const BYTES_PER_PIXEL: u32 = 4;
    /// Every format the device accepts.
    pub const ALL: [u32; 8] = [
        B8G8R8A8_UNORM,
        B8G8R8X8_UNORM,
        A8R8G8B8_UNORM,
        X8R8G8B8_UNORM,
        R8G8B8A8_UNORM,
        X8B8G8R8_UNORM,
        A8B8G8R8_UNORM,
        R8G8B8X8_UNORM,
    ];
}

/// The cursor (§5.7.6.10): a 64×64 resource.
pub mod cursor {
    /// Width and height of a cursor image.
    pub const SIZE: u32 = 64;
}

/// Limits this crate sets itself, with the reasoning.
pub mod limits {
    /// Largest width or height of a resource: four times any display mode a guest
    /// can be given (an EDID's detailed timing holds 12-bit sizes); host memory is
    /// bounded by the byte limits below, this only refuses absurd dimensions early.
    pub const MAX_DIMENSION: u32 = 16384;
    /// Most entries one ATTACH_BACKING may carry: a 64 MiB resource in 4 KiB pages.
    pub const MAX_BACKING_ENTRIES: u32 = 16384;
    /// Most resources one device holds at a time (Linux uses a handful: the fbdev
    /// buffer, a cursor per CRTC, a few dumb buffers per client).
    pub const MAX_RESOURCES: usize = 256;
    /// Most damage rectangles remembered per scanout between two takes; more are
    /// merged into their bounding box, so a flush flood costs no memory.
    pub const MAX_DAMAGE_RECTS: usize = 16;
    /// Default bound on the host memory one resource may take.
    pub const DEFAULT_MAX_RESOURCE_BYTES: u64 = 64 << 20;
    /// Default bound on the host memory all resources of a device may take.
    pub const DEFAULT_MAX_TOTAL_BYTES: u64 = 128 << 20;
    /// Size of the stack buffer ATTACH_BACKING reads the guest pages through to
    /// check that they are guest RAM.
    pub const CHUNK_BYTES: usize = 4 << 10;
}
