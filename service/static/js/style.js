// The lessons' stylesheet (js/lessons.css), linked once by the first panel that needs it.

let linked = false;

export function lessonStyles() {
  if (linked) return;
  linked = true;
  const link = document.createElement("link");
  link.rel = "stylesheet";
  link.href = "/static/js/lessons.css";
  document.head.append(link);
}
