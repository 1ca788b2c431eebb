pub struct NmBridge;
