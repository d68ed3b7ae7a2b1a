// jsdom has no DragEvent, which Lumino's drag-and-drop module subclasses when it loads.
if (typeof globalThis.MouseEvent !== 'undefined' && typeof globalThis.DragEvent === 'undefined') {
  globalThis.DragEvent = class DragEvent extends globalThis.MouseEvent {};
}
