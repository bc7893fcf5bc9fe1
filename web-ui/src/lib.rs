//! The control panel: tera templates and static assets mounted by the controller (filled in by the panel work).
